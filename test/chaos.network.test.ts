import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { FleetClient, type FleetAgent } from '../src/client/index.js';
import { CuttingProxy } from './chaos/cutting-proxy.js';
import { eventually, startTestServer, type TestServer } from './helpers.js';

/** A network that drops in the middle of a message: a real TCP proxy between the clients and fleetd. */
describe('a network that drops mid-message', { timeout: 120_000 }, () => {
  let server: TestServer;
  let proxy: CuttingProxy;
  /** The server's side of every open connection, so that none is left open once the network is gone. */
  const serverSockets = new Set<Socket>();
  const completions = new Map<number, number>();
  const typeCount = async (type: string) => {
    const counts: Record<string, number> = (await server.api.get('/v1/stats')).body.tasks.byType[type] ?? {};
    return Object.values(counts).reduce((a, b) => a + b, 0);
  };
  const task = async (id: number) => (await server.api.get(`/v1/tasks/${id}`)).body;

  before(async () => {
    server = await startTestServer({ agentDisconnectGraceMs: 10_000 });
    server.app.server.on('connection', (socket: Socket) => {
      serverSockets.add(socket);
      socket.once('close', () => serverSockets.delete(socket));
    });
    server.fleet.bus.subscribe('task.completed', ({ task }) => completions.set(task.id, (completions.get(task.id) ?? 0) + 1));
    proxy = await CuttingProxy.start(server.url);
  });
  after(async () => {
    await proxy?.close();
    await server?.stop();
  });

  it('a submit whose body is cut off halfway creates nothing', async () => {
    const body = JSON.stringify({ type: 'half-sent', payload: { text: 'x'.repeat(256 * 1024) } });
    const cut = proxy.cutWhen('to-server', (chunk) => chunk.includes('POST /v1/tasks'));
    const headers = { 'content-type': 'application/json', authorization: `Bearer ${server.adminKey}` };
    await assert.rejects(fetch(`${proxy.url}/v1/tasks`, { method: 'POST', headers, body }).then((r) => r.text()));
    await cut;
    // The server has read what arrived, and answers others meanwhile.
    assert.equal((await server.api.get('/v1/stats')).status, 200);
    assert.equal(await typeCount('half-sent'), 0);
  });

  it('a claim whose answer is cut off: the lease comes back to the queue', async () => {
    const agent = await server.api.registerAgent(['cut-claim']);
    const submitted = await server.api.submit({ type: 'cut-claim', leaseMs: 1_000 });
    const cut = proxy.cutWhen('to-client', (chunk) => chunk.includes('"tasks":[{'));
    const claim = fetch(`${proxy.url}/v1/tasks/claim`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${agent.token}` },
      body: JSON.stringify({ agentId: agent.id, max: 1, waitMs: 0 }),
    }).then((r) => r.text());
    await assert.rejects(claim);
    await cut;
    await eventually(async () => (await task(submitted.id)).status === 'queued', 20_000, 'the lost lease to expire');
    const [again] = await server.api.as(agent.token).claim(agent.id);
    assert.equal(again.id, submitted.id);
    assert.equal(again.attempts, 2);
    assert.equal((await server.api.as(agent.token).post(`/v1/tasks/${again.id}/complete`, { agentId: agent.id })).status, 200);
    assert.equal(server.fleet.waiters.size, 0, 'no claim waiter left behind');
  });

  it('an SDK long-poll agent whose claim loses its answer takes the task back at once, runs it once, and reports no error', async () => {
    const agent = new FleetClient({ url: proxy.url, apiKey: server.adminKey }).agent({ name: 'poll-through-proxy', capabilities: ['cut-poll'], transport: 'poll' });
    const errors: string[] = [];
    agent.on('error', (err: Error) => errors.push(err.message));
    const runs = new Map<number, number>();
    await agent.work(async (t) => {
      runs.set(t.id, (runs.get(t.id) ?? 0) + 1);
      return { ok: true };
    });
    try {
      const cut = proxy.cutWhen('to-client', (chunk) => chunk.includes('"tasks":[{'));
      // A lease far longer than the test: the task completes in time only if the agent takes it back.
      const submitted = await server.api.submit({ type: 'cut-poll', leaseMs: 600_000 });
      await cut;
      await eventually(async () => (await task(submitted.id)).status === 'completed', 20_000, 'the task to complete');
      const done = await task(submitted.id);
      assert.equal(done.agentId, agent.id);
      assert.equal(done.attempts, 1, 'the lease the lost answer carried, not a second attempt');
      assert.equal(runs.get(submitted.id), 1);
      assert.equal(completions.get(submitted.id), 1);
      assert.deepEqual(errors, []);
    } finally {
      await agent.stop();
    }
  });

  it('a submit whose answer is cut off: the SDK sends it again under its idempotency key, and one task exists', async () => {
    const client = new FleetClient({ url: proxy.url, apiKey: server.adminKey });
    const cut = proxy.cutWhen('to-client', (chunk) => chunk.includes('"created":true'));
    const { task: submitted, created } = await client.submit({ type: 'resent', payload: { n: 1 } });
    await cut;
    assert.equal(created, false, 'the answer that arrived is the resend, which found the first');
    assert.equal(await typeCount('resent'), 1);
    assert.equal((await task(submitted.id)).type, 'resent');

    // The answer to a batch may be compressed (from 8 KiB): cut it where its status line passes.
    const batchCut = proxy.cutWhen('to-client', (chunk) => chunk.includes('HTTP/1.1 201'));
    const items = await client.submitBatch(Array.from({ length: 20 }, (_, n) => ({ type: 'resent-batch', payload: { n } })));
    await batchCut;
    assert.equal(items.length, 20);
    assert.equal(await typeCount('resent-batch'), 20);
  });

  describe('WebSocket frames cut halfway', () => {
    let agent: FleetAgent;
    before(async () => {
      agent = new FleetClient({ url: proxy.url, apiKey: server.adminKey }).agent({ name: 'through-proxy', capabilities: ['frame'], transport: 'ws', reconnect: { minMs: 50, maxMs: 500 } });
      await agent.work(async (t) => ((t.payload as { big?: boolean }).big ? { text: 'y'.repeat(64 * 1024) } : { ok: true }));
    });
    after(() => agent?.stop());

    it('from the server (a pushed task): the agent reconnects, resumes the lease and completes it once', async () => {
      const cut = proxy.cutWhen('to-client', (chunk) => chunk.includes('"type":"tasks"'));
      const pushed = await server.api.submit({ type: 'frame', payload: { n: 1 } });
      await cut;
      await eventually(async () => (await task(pushed.id)).status === 'completed', 20_000, 'the pushed task to complete');
      const done = await task(pushed.id);
      assert.equal(done.agentId, agent.id);
      assert.equal(done.attempts, 1, 'the resumed lease, not a second attempt');
      assert.equal(completions.get(pushed.id), 1);
    });

    it('from the agent (a large completion): it completes once, over the next connection', async () => {
      // Client frames are masked: the cut is recognised by size, a chunk of the 64 KiB result.
      const cut = proxy.cutWhen('to-server', (chunk) => chunk.length > 16 * 1024);
      const big = await server.api.submit({ type: 'frame', payload: { big: true } });
      await cut;
      await eventually(async () => (await task(big.id)).status === 'completed', 20_000, 'the large completion to arrive');
      assert.equal((await task(big.id)).result.text.length, 64 * 1024);
      assert.equal(completions.get(big.id), 1);
    });
  });

  it('leaves nothing behind: no connection, socket, waiter or lease', async () => {
    await proxy.close();
    await eventually(async () => (await server.api.get('/v1/gateway')).body.connections === 0, 20_000, 'every WebSocket to close');
    const proxied = () => [...serverSockets].filter((s) => proxy.upstreamPorts.has(s.remotePort!));
    await eventually(() => proxied().length === 0, 20_000, 'every connection through the proxy to close on the server');
    assert.equal(server.fleet.waiters.size, 0);
    assert.equal((await server.api.get('/v1/stats')).body.tasks.byStatus.leased, 0);
    assert.ok(proxy.cutCount >= 6, `${proxy.cutCount} connections cut`);
  });
});
