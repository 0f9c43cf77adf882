import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { FleetClient, type Gap, type StreamEvent } from '../src/client/index.js';
import { eventually, startTestServer, type TestServer } from './helpers.js';
import { connect } from './ws-helpers.js';
import { CuttingProxy } from './tcp-proxy.js';

describe('a subscription that never misses', () => {
  let server: TestServer;
  let proxy: CuttingProxy;
  let viaProxy: string;
  before(async () => {
    server = await startTestServer({ eventReplayWindow: 500 });
    proxy = new CuttingProxy();
    viaProxy = await proxy.start(server.url);
  });
  after(async () => {
    await proxy.stop();
    await server.stop();
  });

  it('cut by a proxy mid-stream, reconnects by itself and resumes without a gap or a repeat', async () => {
    const client = new FleetClient({ url: viaProxy, apiKey: server.adminKey });
    const created: number[] = [];
    const gaps: Gap[] = [];
    const sub = await client.subscribe(
      ['queue:resume'],
      (e: StreamEvent) => {
        if (e.name === 'task.created') created.push(e.data.task.id);
      },
      () => {},
      { onGap: (g) => gaps.push(g), reconnect: { minMs: 20, maxMs: 200 } },
    );
    try {
      const submitted: number[] = [];
      for (let i = 0; i < 300; i++) {
        submitted.push((await server.api.submit({ type: 'resume', payload: { i } })).id);
        if (i === 100 || i === 200) proxy.cut();
      }
      await eventually(() => created.length >= 300, 20_000, 'all 300 task.created events');
      assert.deepEqual(created, submitted, 'every event once, in order');
      assert.deepEqual(gaps, []);
      assert.ok(proxy.connections >= 3, `the subscription reconnected (${proxy.connections} connections)`);
      assert.ok(sub.lastSeq > 0 && typeof sub.epoch === 'string');
    } finally {
      sub.close();
    }
  });

  it('reports a gap larger than the retained window instead of skipping it, then goes on live', async () => {
    const client = new FleetClient({ url: viaProxy, apiKey: server.adminKey });
    const created: number[] = [];
    const gaps: Gap[] = [];
    const sub = await client.subscribe(['queue:away'], (e) => e.name === 'task.created' && created.push(e.data.task.id), () => {}, {
      onGap: (g) => gaps.push(g),
      reconnect: { minMs: 20, maxMs: 100 },
    });
    try {
      const before = sub.lastSeq;
      proxy.refusing = true;
      proxy.cut();
      // More events than the window holds (500), while the subscriber cannot connect.
      await server.api.post('/v1/tasks/batch', { tasks: Array.from({ length: 600 }, () => ({ type: 'away' })) });
      proxy.refusing = false;
      await eventually(() => gaps.length > 0, 20_000, 'the gap reported');
      assert.equal(gaps[0].reason, 'window');
      assert.equal(gaps[0].from, before + 1);
      const after = await server.api.submit({ type: 'away' });
      await eventually(() => created.includes(after.id), 10_000, 'a live event after the gap');
    } finally {
      proxy.refusing = false;
      sub.close();
    }
  });

  it('replays ?since= for the dashboard, numbers every event, and refuses another epoch\'s numbers with a gap', async () => {
    const first = await server.api.submit({ type: 'since' });
    const observer = await connect(`${server.url}/v1/events`, { authorization: `Bearer ${server.adminKey}` });
    let epoch: string;
    let seqOfFirst: number;
    try {
      observer.send({ type: 'subscribe', topics: ['queue:since'], since: 0 });
      const subscribed = await observer.next('subscribed');
      epoch = subscribed.epoch;
      const replayed = await observer.next('events');
      const event = replayed.events.find((e: any) => e.data.task.id === first.id);
      assert.ok(event, 'the retained event was replayed');
      seqOfFirst = event.seq;
      observer.send({ type: 'subscribe', topics: ['tasks'], since: 0, epoch: 'another-node' });
      const gap = await observer.next('gap', (m) => m.reason === 'epoch');
      assert.deepEqual([gap.reason, gap.epoch], ['epoch', epoch]);
      observer.send({ type: 'subscribe', topics: ['tasks'], since: -1 });
      assert.equal((await observer.next('error')).error.code, 'FLEETD_ERR_VALIDATION');
    } finally {
      observer.socket.close();
    }
    const second = await server.api.submit({ type: 'since' });
    const dashboard = await connect(`${server.url}/v1/events?since=${seqOfFirst}&epoch=${epoch}`, { authorization: `Bearer ${server.adminKey}` });
    try {
      dashboard.send({ type: 'subscribe', topics: ['queue:since'] });
      const replayed = await dashboard.next('events');
      assert.deepEqual(replayed.events.map((e: any) => e.data.task.id), [second.id], 'only what came after since');
      assert.ok(replayed.events[0].seq > seqOfFirst);
    } finally {
      dashboard.socket.close();
    }
  });
});
