import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { RedisBus } from '../src/bus/redis-bus.js';
import { TEST_REDIS_URL } from './cluster/node-process.js';
import { eventually, startTestServer, startTogether } from './helpers.js';
import { connect, type Peer } from './ws-helpers.js';

const agent = { id: 'a1', namespace: 'default', name: 'a', capabilities: [], labels: {}, maxConcurrency: 1, status: 'online' as const, createdAt: 1, lastHeartbeatAt: 1 };

describe('events lost between nodes are reported, never skipped in silence', { timeout: 30_000 }, () => {
  it('a node hears that another node\'s messages went missing (numbered, sent or not)', async () => {
    const settings = { url: TEST_REDIS_URL, prefix: `fleetd-test-${randomBytes(4).toString('hex')}:` };
    const [a, b] = await startTogether({ start: RedisBus.connect(settings), stop: (bus) => bus.close() }, { start: RedisBus.connect(settings), stop: (bus) => bus.close() });
    try {
      const gaps: number[] = [];
      b.onRelayGap((node, missed) => node === a.nodeId && gaps.push(missed));
      let heard = 0;
      b.subscribe('agent.registered', () => heard++);
      a.publish('agent.registered', { agent });
      await eventually(() => heard === 1, 5_000, 'the first event');
      // A's publishing connection down: its next message is dropped (and counted), as while Redis is away.
      const pub = (a as unknown as { pub: Redis }).pub;
      pub.disconnect();
      a.publish('agent.registered', { agent });
      await eventually(() => a.dropped === 1, 5_000, 'the message dropped');
      await pub.connect();
      a.publish('agent.registered', { agent });
      await eventually(() => heard === 2, 5_000, 'the event after the outage');
      assert.deepEqual(gaps, [1]);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  it('tells every observer of a node of a relay gap, and starts a new epoch there', async () => {
    const prefix = `fleetd-test-${randomBytes(4).toString('hex')}:`;
    const server = await startTestServer({ redisUrl: TEST_REDIS_URL, redisPrefix: prefix });
    const other = new Redis(TEST_REDIS_URL);
    let observer: Peer | undefined;
    try {
      observer = await connect(`${server.url}/v1/events`, { authorization: `Bearer ${server.adminKey}` });
      observer.send({ type: 'subscribe', topics: ['agents'] });
      const { epoch } = await observer.next('subscribed');
      // Another node's messages 1 and 4 arrive; 2 and 3 never did.
      const message = (n: number) => JSON.stringify({ node: 'node-b', n, events: [['agent.stale', { agentId: `from-b-${n}` }]] });
      await other.publish(`${prefix}events`, message(1));
      const first = await observer.next('events');
      assert.equal(first.events[0].data.agentId, 'from-b-1');
      await other.publish(`${prefix}events`, message(4));
      const gap = await observer.next('gap');
      assert.equal(gap.reason, 'relay');
      assert.notEqual(gap.epoch, epoch, 'a new numbering from here');
      const after = await observer.next('events');
      assert.equal(after.events[0].data.agentId, 'from-b-4');
      // A resume in the old numbering is told too.
      const late = await connect(`${server.url}/v1/events?since=${first.events[0].seq}&epoch=${epoch}`, { authorization: `Bearer ${server.adminKey}` });
      try {
        late.send({ type: 'subscribe', topics: ['agents'] });
        assert.equal((await late.next('gap')).reason, 'epoch');
      } finally {
        late.socket.close();
      }
    } finally {
      observer?.socket.close();
      other.disconnect();
      await server.stop();
    }
  });
});
