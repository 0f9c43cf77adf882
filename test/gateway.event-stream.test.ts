import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { eventually, startTestServer, type TestServer } from './helpers.js';
import { assertWireEvents, connect, observe as observeOn, type Peer } from './ws-helpers.js';

const observe = (server: TestServer, topics: string[], options = {}): Promise<Peer> => observeOn(server.url, server.adminKey, topics, options);


describe('event stream', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ eventBatchMs: 20, eventBatchMax: 50 });
  });
  after(() => server.stop());

  it('sends each socket only the events of its topics', async () => {
    const { api } = server;
    const alpha = await observe(server, ['queue:alpha']);
    const agents = await observe(server, ['agents']);
    const all = await observe(server, ['tasks']);
    const a = await api.submit({ type: 'alpha' });
    const b = await api.submit({ type: 'beta' });
    const one = await observe(server, [`task:${b.id}`]);
    await api.post(`/v1/tasks/${b.id}/retry`).catch(() => {});
    await api.delete(`/v1/tasks/${b.id}`);
    await api.registerAgent(['x']);

    // The catch-all socket sees everything in order; each narrower socket is checked after it.
    await all.next('events', (m) => m.events.some((e: any) => e.name === 'task.cancelled'));
    await one.next('events', (m) => m.events.some((e: any) => e.name === 'task.cancelled'));
    await agents.next('events', (m) => m.events.some((e: any) => e.name === 'agent.registered'));
    await alpha.next('events');
    const cancelOnly = one.events();
    assert.deepEqual(cancelOnly.map((e) => [e.topic, e.name, e.data.task.id]), [[`task:${b.id}`, 'task.cancelled', b.id]]);
    assert.ok(alpha.events().every((e) => e.topic === 'queue:alpha' && e.data.task.type === 'alpha'));
    assert.deepEqual(alpha.events().map((e) => e.data.task.id), [a.id]);
    assert.ok(agents.events().every((e) => e.topic === 'agents' && e.name.startsWith('agent.')));
    assert.deepEqual(
      all.events().map((e) => [e.name, e.data.task.id]),
      [['task.created', a.id], ['task.created', b.id], ['task.cancelled', b.id]],
    );
    assert.ok(all.events().every((e) => new Date(e.at).toISOString() === e.at));
    await Promise.all([alpha.close(), agents.close(), all.close(), one.close()]);
  });

  it('carries tasks, agents and locks in the JSON shape the REST API gives them, times in ISO 8601', async () => {
    const { api } = server;
    const peer = await observe(server, ['queue:shape', 'agents', 'locks', 'stats']);
    const registered = (await api.post('/v1/agents', { name: 'shape', capabilities: ['shape'] })).body.agent;
    await api.submit({ type: 'shape', requires: ['shape'], payload: { text: 'not in events' } });
    const [claimed] = await api.claim(registered.id);
    const lock = (await api.post('/v1/locks', { agentId: registered.id, resources: ['shape.txt'], ttlMs: 60_000 })).body;
    while (!peer.events().some((e) => e.name === 'lock.acquired')) await peer.next('events');

    const events = peer.events();
    const data = (name: string) => events.find((e) => e.name === name)?.data;
    const { payload: _payload, result: _result, ...claimedSummary } = (await api.get(`/v1/tasks/${claimed.id}`)).body;
    assert.deepEqual(data('task.claimed').task, claimedSummary);
    assert.deepEqual(data('agent.registered').agent, registered);
    assert.deepEqual(data('lock.acquired').lock, (await api.get(`/v1/locks/${lock.id}`)).body);
    assertWireEvents(events);
    assert.ok(events.some((e) => e.name === 'stats'));
    await peer.close();
  });

  it('stops sending a topic after unsubscribe, and refuses unknown topics without changing the subscription', async () => {
    const { api } = server;
    const peer = await observe(server, ['tasks', 'locks']);
    peer.send({ type: 'subscribe', topics: ['everything'] });
    assert.equal((await peer.next('error')).error.code, 'FLEETD_ERR_VALIDATION');
    peer.send({ type: 'unsubscribe', topics: ['tasks'] });
    assert.deepEqual((await peer.next('subscribed')).topics, ['locks']);
    await api.submit({ type: 'ignored' });
    const agent = await api.registerAgent(['l']);
    await api.post('/v1/locks', { agentId: agent.id, resources: ['r'], ttlMs: 1000 });
    const batch = await peer.next('events');
    assert.deepEqual(batch.events.map((e: any) => e.name), ['lock.acquired']);
    assert.deepEqual(peer.events().filter((e) => e.topic === 'tasks'), []);
    await peer.close();
  });

  it('batches events: one burst arrives in few messages of at most eventBatchMax events, deflated on the wire', async () => {
    const { api } = server;
    const peer = await observe(server, ['queue:burst']);
    assert.match(peer.socket.extensions, /permessage-deflate/);
    let text = 0;
    peer.socket.on('message', (data) => (text += (data as Buffer).length));
    const wireBefore = (peer.socket as any)._socket.bytesRead;
    await api.post('/v1/tasks/batch', { tasks: Array.from({ length: 120 }, () => ({ type: 'burst' })) });
    const seen = () => peer.events().length;
    while (seen() < 120) await peer.next('events');
    const batches = peer.received.filter((m) => m.type === 'events');
    assert.equal(seen(), 120);
    assert.ok(batches.every((b) => b.events.length <= 50));
    assert.ok(batches.length <= 4, `${batches.length} messages for 120 events`);
    const wire = (peer.socket as any)._socket.bytesRead - wireBefore;
    assert.ok(wire < text / 2, `${wire} bytes on the wire for ${text} bytes of JSON`);
    await peer.close();
  });

  it('closes an observer that sends a message no subscription could need (1009), leaving the others be', async () => {
    const rude = await observe(server, ['tasks']);
    const polite = await observe(server, ['tasks']);
    rude.socket.send(JSON.stringify({ type: 'subscribe', topics: Array.from({ length: 10_000 }, (_, i) => `queue:${'x'.repeat(20)}${i}`) }));
    const closed = await rude.closed;
    assert.equal(closed.code, 1009);
    const task = await server.api.submit({ type: 'after-rude' });
    await polite.next('events', (m) => m.events.some((e: any) => e.data.task?.id === task.id));
    await polite.close();
  });

  it('closes an observer whose frame is not UTF-8 with 1007 every time, even right after a large deflated frame', async () => {
    // The client deflates the large frame; the server was still busy with it when the bad one
    // failed, and the socket used to be cut before ws's close frame went out (the peer saw 1006).
    const large = JSON.stringify({ type: 'subscribe', topics: Array.from({ length: 400 }, (_, i) => `task:${i}`), padding: 'x'.repeat(20_000) });
    const codes = new Map<number, number>();
    for (let i = 0; i < 300; i++) {
      const peer = await connect(`${server.url}/v1/events`, { authorization: `Bearer ${server.adminKey}` });
      peer.socket.send(large);
      peer.socket.send(Buffer.from('{"type":"unsubscribe","topics":"x\xff\xfey"}', 'latin1'), { binary: false });
      peer.socket.send(JSON.stringify({ type: 'subscribe', topics: ['task:1'] }));
      const { code } = await peer.closed;
      codes.set(code, (codes.get(code) ?? 0) + 1);
    }
    assert.deepEqual([...codes], [[1007, 300]]);
  });

  it('pushes stats snapshots to stats subscribers', async () => {
    const peer = await observe(server, ['stats']);
    const batch = await peer.next('events');
    assert.equal(batch.events[0].name, 'stats');
    assert.equal(batch.events[0].topic, 'stats');
    assert.ok(batch.events[0].data.tasks.byStatus);
    await peer.close();
  });
});

describe('slow consumer', () => {
  it('cuts off an observer that stops reading, keeping its unsent bytes bounded', async () => {
    const limit = 64 * 1024;
    const server = await startTestServer({ wsMaxBufferedBytes: limit, eventBatchMs: 1 });
    try {
      const slow = await observe(server, ['tasks'], { perMessageDeflate: false });
      const fast = await observe(server, ['stats']);
      // The slow peer stops reading: the kernel buffers fill, then the server's own buffer grows.
      (slow.socket as any)._socket.pause();
      const key = 'k'.repeat(200);
      const gateway = async () => (await server.api.get('/v1/gateway')).body;
      for (let round = 0; round < 40 && (await gateway()).slowConsumersCut === 0; round++) {
        await server.api.post('/v1/tasks/batch', {
          tasks: Array.from({ length: 1000 }, (_, i) => ({ type: 'flood', idempotencyKey: `${key}-${round}-${i}`, requires: ['a', 'b', 'c'] })),
        });
      }
      const after = await gateway();
      assert.equal(after.slowConsumersCut, 1);
      assert.equal(after.connections, 1, 'only the fast observer is left');
      // Bounded: the cap plus the one batch that was on its way when the cap was passed.
      assert.ok(after.peakBufferedBytes <= limit + 256 * 1024, `peak unsent bytes ${after.peakBufferedBytes}`);
      (slow.socket as any)._socket.resume();
      assert.notEqual((await slow.closed).code, 1000);
      assert.equal(fast.socket.readyState, fast.socket.OPEN, 'the other observer is untouched');
      await fast.close();
    } finally {
      await server.stop();
    }
  });
});

describe('a replay larger than the cap', () => {
  it('reaches an observer that reads, whatever one turn sends it', async () => {
    const limit = 256 * 1024;
    const server = await startTestServer({ wsMaxBufferedBytes: limit });
    try {
      // 2,000 task.created events in the window: more than the cap on unsent bytes.
      for (let i = 0; i < 4; i++) {
        await server.api.post('/v1/tasks/batch', { tasks: Array.from({ length: 500 }, (_, n) => ({ type: 'replayed', payload: { n, pad: 'p'.repeat(200) } })) });
      }
      const peer = await connect(`${server.url}/v1/events`, { authorization: `Bearer ${server.adminKey}` }, { perMessageDeflate: false });
      peer.send({ type: 'subscribe', topics: ['queue:replayed'], since: 0 });
      await eventually(() => peer.events().filter((e) => e.name === 'task.created').length >= 2_000, 10_000, 'all 2,000 task.created events replayed');
      const gateway = (await server.api.get('/v1/gateway')).body;
      assert.equal(gateway.slowConsumersCut, 0);
      assert.equal(peer.socket.readyState, peer.socket.OPEN);
      await peer.close();
    } finally {
      await server.stop();
    }
  });
});

describe('event stream, namespaces', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ eventBatchMs: 5 });
  });
  after(() => server.stop());

  const keyOf = async (namespaces: string[]) => (await server.api.post('/v1/keys', { name: `of ${namespaces}`, scope: 'read', namespaces })).body.secret as string;
  const watch = async (path: string, key: string) => {
    const peer = await connect(`${server.url}${path}`, { authorization: `Bearer ${key}` });
    peer.send({ type: 'subscribe', topics: ['tasks', 'agents'] });
    await peer.next('subscribed');
    return peer;
  };

  it('sends an observer only the task and agent events of the namespaces its key reaches, narrowed by ?namespace=', async () => {
    const teamB = await keyOf(['team-b']);
    const both = await keyOf(['team-a', 'team-b']);
    const all = await watch('/v1/events', server.adminKey!);
    const onlyB = await watch('/v1/events', teamB);
    const narrowedToA = await watch('/v1/events?namespace=team-a', both);
    try {
      const a = await server.api.submit({ type: 'ns.a', namespace: 'team-a' });
      const b = await server.api.submit({ type: 'ns.b', namespace: 'team-b' });
      await server.api.registerAgent(['ns.a'], { namespace: 'team-a' });
      const last = await server.api.registerAgent(['ns.b'], { namespace: 'team-b' });
      // Events go out in order: once the last one reached every socket that sees it, nothing else is coming.
      const upTo = async (peer: Peer, agentId: string) => {
        while (!peer.events().some((e) => e.data.agent?.id === agentId)) await peer.next('events');
      };
      await upTo(all, last.id);
      await upTo(onlyB, last.id);
      const agentA = (await server.api.get('/v1/agents?namespace=team-a')).body.items[0].id;
      await upTo(narrowedToA, agentA);
      const seen = (peer: Peer) => peer.events().map((e) => (e.data.task ?? e.data.agent).namespace);
      assert.deepEqual(seen(all), ['team-a', 'team-b', 'team-a', 'team-b']);
      assert.deepEqual(seen(onlyB), ['team-b', 'team-b']);
      assert.deepEqual(seen(narrowedToA), ['team-a', 'team-a']);
      assert.deepEqual(narrowedToA.events().filter((e) => e.data.task).map((e) => e.data.task.id), [a.id]);
      assert.deepEqual(onlyB.events().filter((e) => e.data.task).map((e) => e.data.task.id), [b.id]);
    } finally {
      await Promise.all([all.close(), onlyB.close(), narrowedToA.close()]);
    }
  });

  it('refuses the upgrade with a 404 for a namespace out of the key\'s reach, and a 400 for a bad name', async () => {
    const teamB = await keyOf(['team-b']);
    await assert.rejects(connect(`${server.url}/v1/events?namespace=team-a`, { authorization: `Bearer ${teamB}` }), (err: any) => {
      assert.equal(err.status, 404);
      assert.equal(err.body.error.code, 'FLEETD_ERR_NOT_FOUND');
      return true;
    });
    await assert.rejects(connect(`${server.url}/v1/events?namespace=Not%20One`, { authorization: `Bearer ${server.adminKey}` }), (err: any) => {
      assert.equal(err.status, 400);
      return true;
    });
    assert.equal((await server.api.get('/v1/gateway')).body.connections, 0);
  });
});
