import assert from 'node:assert/strict';
import { Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { eventually, nextEvent, startTestServer, type TestServer } from './helpers.js';
import { connect, connectAgent, type Peer } from './ws-helpers.js';

describe('agent stream', () => {
  let server: TestServer;
  before(async () => {
    // Pings once an hour: a round of pings starts a hundredth of the period after the start (0.1 s by
    // default, 36 s here), and its pings went out among the writes and frames these tests count. The
    // ping tests below have servers of their own.
    server = await startTestServer({ agentDisconnectGraceMs: 300, wsPingMs: 3_600_000 });
  });
  after(() => server.stop());

  it('pushes a submitted task to a connected agent with credit, and takes its completion', async () => {
    const { api, url } = server;
    const agent = await api.registerAgent(['push']);
    const { peer, welcome } = await connectAgent(url, agent);
    assert.equal(welcome.protocol, 1);
    assert.equal(welcome.agent.id, agent.id);
    assert.deepEqual(welcome.leased, []);
    peer.send({ type: 'credit', add: 1 });
    const task = await api.submit({ type: 'push', payload: { n: 1 } });
    const pushed = await peer.next('tasks');
    assert.deepEqual(pushed.tasks.map((t: any) => [t.id, t.status, t.payload]), [[task.id, 'leased', { n: 1 }]]);
    // Field for field what the REST API says of the same task, times in ISO 8601.
    assert.deepEqual(pushed.tasks[0], (await api.get(`/v1/tasks/${task.id}`)).body);
    peer.send({ type: 'complete', id: task.id, result: { ok: true }, ref: 'c1' });
    const ack = await peer.next('ack', (m) => m.ref === 'c1');
    assert.equal(ack.status, 'completed');
    const stored = (await api.get(`/v1/tasks/${task.id}`)).body;
    assert.equal(stored.status, 'completed');
    assert.deepEqual(stored.result, { ok: true });
    await peer.close();
  });

  it('never has more tasks out than the credit granted', async () => {
    const { api, url } = server;
    const agent = await api.registerAgent(['credit'], { maxConcurrency: 100 });
    await api.post('/v1/tasks/batch', { tasks: Array.from({ length: 10 }, (_, i) => ({ type: 'credit', payload: { i } })) });
    const { peer } = await connectAgent(url, agent);
    const leased = async () => (await api.get(`/v1/tasks?agentId=${agent.id}&status=leased`)).body.items.length;

    peer.send({ type: 'credit', add: 3 });
    const first = await peer.next('tasks');
    // A heartbeat round trip: anything the credit could still bring would have come before its ack.
    peer.send({ type: 'heartbeat', ref: 'h1' });
    await peer.next('ack', (m) => m.ref === 'h1');
    assert.equal(first.tasks.length, 3);
    assert.equal(peer.received.filter((m) => m.type === 'tasks').length, 1);
    assert.equal(await leased(), 3);

    peer.send({ type: 'complete', id: first.tasks[0].id, ref: 'c' });
    await peer.next('ack', (m) => m.ref === 'c');
    peer.send({ type: 'heartbeat', ref: 'h2' });
    await peer.next('ack', (m) => m.ref === 'h2');
    assert.equal(peer.received.filter((m) => m.type === 'tasks').length, 1, 'completing does not grant credit by itself');

    peer.send({ type: 'credit', add: 2 });
    const second = await peer.next('tasks');
    peer.send({ type: 'heartbeat', ref: 'h3' });
    await peer.next('ack', (m) => m.ref === 'h3');
    assert.equal(second.tasks.length, 2);
    assert.equal(await leased(), 4);
    await peer.close();
  });

  it('answers a completion and pushes the task its credit claimed in one write', async () => {
    const { api, url } = server;
    const agent = await api.registerAgent(['one-write'], { maxConcurrency: 1 });
    await api.post('/v1/tasks/batch', { tasks: [{ type: 'one-write', payload: { n: 1 } }, { type: 'one-write', payload: { n: 2 } }] });
    // As the SDK connects: without permessage-deflate (a deflated frame leaves after zlib's turn).
    const peer = await connect(`${url}/v1/agents/${agent.id}/stream`, { authorization: `Bearer ${agent.token}` }, { perMessageDeflate: false });
    await peer.next('welcome');
    peer.send({ type: 'credit', add: 1 });
    const first = (await peer.next('tasks')).tasks[0];
    const client = (peer.socket as unknown as { _socket: Socket })._socket;
    // Every write the server makes on its end of this connection from here (its peer is the client's port).
    const writes: string[] = [];
    const originals = { _write: Socket.prototype._write, _writev: Socket.prototype._writev! };
    Socket.prototype._write = function (this: Socket, ...args: Parameters<Socket['_write']>) {
      if (this.remotePort === client.localPort) writes.push('write');
      return originals._write.apply(this, args);
    };
    Socket.prototype._writev = function (this: Socket, ...args: Parameters<NonNullable<Socket['_writev']>>) {
      if (this.remotePort === client.localPort) writes.push(`writev of ${args[0].length}`);
      return originals._writev.apply(this, args);
    };
    let ack, second;
    try {
      // As the SDK sends them: the outcome, then the slot's credit, in one write.
      client.cork();
      peer.send({ type: 'complete', id: first.id, ref: 'c' });
      peer.send({ type: 'credit', add: 1 });
      client.uncork();
      ack = await peer.next('ack', (m) => m.ref === 'c');
      second = (await peer.next('tasks')).tasks[0];
    } finally {
      Object.assign(Socket.prototype, originals);
    }
    assert.equal(ack.status, 'completed');
    assert.deepEqual(second.payload, { n: 2 });
    assert.equal(writes.length, 1, `one write for the ack and the task: ${writes.join(', ')}`);
    await peer.close();
  });

  it('compresses only messages from 8 KiB for a peer that offers permessage-deflate', async () => {
    const { api, url } = server;
    const agent = await api.registerAgent(['deflate']);
    // ws, like a browser, offers permessage-deflate with context takeover unless told otherwise.
    const { peer } = await connectAgent(url, agent);
    const bytes: Buffer[] = [];
    (peer.socket as unknown as { _socket: Socket })._socket.prependListener('data', (chunk: Buffer) => bytes.push(chunk));
    peer.send({ type: 'credit', add: 2 });
    const small = await api.submit({ type: 'deflate', payload: { n: 1 } });
    assert.equal((await peer.next('tasks')).tasks[0].id, small.id);
    const large = await api.submit({ type: 'deflate', payload: { text: 'x'.repeat(20_000) } });
    const pushed = (await peer.next('tasks')).tasks[0];
    assert.equal(pushed.id, large.id);
    assert.equal(pushed.payload.text.length, 20_000);
    assert.deepEqual(frameHeaders(Buffer.concat(bytes)).map((f) => f.compressed), [false, true], 'the small task plain, the large one deflated');
    await peer.close();
  });

  it('keeps no credit past the agent\'s maxConcurrency, so other agents get the rest', async () => {
    const { api, url } = server;
    const small = await api.registerAgent(['capped'], { maxConcurrency: 2 });
    const other = await api.registerAgent(['capped'], { maxConcurrency: 10 });
    const a = await connectAgent(url, small);
    a.peer.send({ type: 'credit', add: 5 });
    a.peer.send({ type: 'heartbeat', ref: 'ready' });
    await a.peer.next('ack', (m) => m.ref === 'ready');
    const b = await connectAgent(url, other);
    b.peer.send({ type: 'credit', add: 10 });
    b.peer.send({ type: 'heartbeat', ref: 'ready' });
    await b.peer.next('ack', (m) => m.ref === 'ready');
    // Five tasks: were the first agent's credit of 5 kept, it alone would be woken for all of them.
    await api.post('/v1/tasks/batch', { tasks: Array.from({ length: 5 }, () => ({ type: 'capped' })) });
    const count = (peer: typeof a.peer) => peer.received.filter((m) => m.type === 'tasks').reduce((n, m) => n + m.tasks.length, 0);
    await eventually(() => count(a.peer) + count(b.peer) === 5, 5_000, 'all five tasks pushed');
    assert.equal(count(a.peer), 2);
    assert.equal(count(b.peer), 3);
    await Promise.all([a.peer.close(), b.peer.close()]);
  });

  it('resumes the leases of an agent that reconnects inside the grace period', async () => {
    const { api, url } = server;
    const agent = await api.registerAgent(['resume']);
    const first = await connectAgent(url, agent);
    first.peer.send({ type: 'credit', add: 1 });
    const task = await api.submit({ type: 'resume' });
    await first.peer.next('tasks');
    await first.peer.close();

    const second = await connectAgent(url, agent);
    assert.deepEqual(second.welcome.leased.map((t: any) => t.id), [task.id]);
    second.peer.send({ type: 'complete', id: task.id, ref: 'done' });
    assert.equal((await second.peer.next('ack', (m) => m.ref === 'done')).status, 'completed');
    const stored = (await api.get(`/v1/tasks/${task.id}`)).body;
    assert.equal(stored.attempts, 1, 'claimed once: the lease was resumed, not re-issued');
    await second.peer.close();
  });

  it('resumes the leases of an agent whose grace runs out while its new socket is being welcomed, and releases them when that socket fails', async () => {
    const { api, url } = server;
    const agent = await api.registerAgent(['resume-late']);
    const first = await connectAgent(url, agent);
    first.peer.send({ type: 'credit', add: 1 });
    const task = await api.submit({ type: 'resume-late' });
    await first.peer.next('tasks');
    // A slow store at the welcome (its write takes 400 ms more here) keeps the new socket waiting
    // across the end of the 300 ms grace: the release must not take back what the welcome hands back.
    const agents = server.fleet.agents;
    const connected = agents.connected;
    agents.connected = async (id) => {
      if (id === agent.id) await new Promise((r) => setTimeout(r, 400));
      return connected.call(agents, id);
    };
    try {
      await first.peer.close();
      await new Promise((r) => setTimeout(r, 100));
      const second = await connectAgent(url, agent);
      assert.deepEqual(second.welcome.leased.map((t: any) => t.id), [task.id]);
      second.peer.send({ type: 'complete', id: task.id, ref: 'done' });
      assert.equal((await second.peer.next('ack', (m) => m.ref === 'done')).status, 'completed');
      assert.equal((await api.get(`/v1/tasks/${task.id}`)).body.attempts, 1);

      // A socket that closes before its welcome leaves the grace running: the agent goes offline.
      const another = await api.submit({ type: 'resume-late' });
      second.peer.send({ type: 'credit', add: 1 });
      await second.peer.next('tasks');
      const offline = nextEvent(server, 'agent.offline', (e) => e.agent.id === agent.id);
      await second.peer.close();
      await new Promise((r) => setTimeout(r, 200));
      const third = await connect(`${url}/v1/agents/${agent.id}/stream`, { authorization: `Bearer ${agent.token}` });
      await third.close();
      await offline;
      assert.equal((await api.get(`/v1/tasks/${another.id}`)).body.status, 'queued');
    } finally {
      agents.connected = connected;
    }
  });

  it('releases the leases and locks of an agent that stays away past the grace period', async () => {
    const { api, url } = server;
    const agent = await api.registerAgent(['gone']);
    const { peer } = await connectAgent(url, agent);
    peer.send({ type: 'credit', add: 1 });
    const task = await api.submit({ type: 'gone' });
    await peer.next('tasks');
    const lock = await api.post('/v1/locks', { agentId: agent.id, resources: ['file:/gone.txt'], ttlMs: 60_000 });
    assert.equal(lock.status, 200);

    const offline = nextEvent(server, 'agent.offline', (e) => e.agent.id === agent.id);
    await peer.close();
    await offline;
    const stored = (await api.get(`/v1/tasks/${task.id}`)).body;
    assert.equal(stored.status, 'queued');
    assert.equal(stored.leaseExpiresAt, null);
    assert.equal((await api.get(`/v1/locks/${lock.body.id}`)).status, 404);
    assert.equal((await api.get(`/v1/agents/${agent.id}`)).body.status, 'offline');
  });

  it('refuses a bad token with 401 and another agent\'s with 403 before upgrading, and sends nothing', async () => {
    const { api, url } = server;
    const agent = await api.registerAgent(['auth']);
    await api.submit({ type: 'auth' });
    for (const headers of [{ authorization: 'Bearer fla_wrong' }, {}, { authorization: `Bearer ${agent.token}x` }] as Record<string, string>[]) {
      await assert.rejects(connect(`${url}/v1/agents/${agent.id}/stream`, headers), (err: any) => {
        assert.equal(err.status, 401);
        assert.equal(err.body.error.code, 'FLEETD_ERR_UNAUTHORIZED');
        return true;
      });
    }
    const other = await api.registerAgent(['auth']);
    // A real token of another agent is known but not allowed: 403.
    await assert.rejects(connect(`${url}/v1/agents/${agent.id}/stream`, { authorization: `Bearer ${other.token}` }), { status: 403 });
    await assert.rejects(connect(`${url}/v1/agents/nobody/stream?token=${agent.token}`), { status: 403 });
    const queued = (await api.get('/v1/tasks?type=auth')).body.items;
    assert.equal(queued[0].status, 'queued');
  });

  it('answers a malformed or unknown message with a coded error and changes nothing', async () => {
    const { api, url } = server;
    const agent = await api.registerAgent(['bad']);
    const { peer } = await connectAgent(url, agent);
    peer.socket.send('{not json');
    assert.equal((await peer.next('error')).error.code, 'FLEETD_ERR_MALFORMED_JSON');
    peer.send({ type: 'credit', add: 0 });
    assert.equal((await peer.next('error')).error.code, 'FLEETD_ERR_VALIDATION');
    peer.send({ type: 'launch', id: 1 });
    assert.equal((await peer.next('error')).error.code, 'FLEETD_ERR_VALIDATION');
    peer.send({ type: 'complete', id: 2 ** 64, ref: 'past-2^53' });
    assert.equal((await peer.next('error', (m) => m.error.details?.ref === 'past-2^53')).error.code, 'FLEETD_ERR_VALIDATION');
    const task = await api.submit({ type: 'other-agents-task' });
    peer.send({ type: 'complete', id: task.id, ref: 'steal' });
    const refused = await peer.next('error', (m) => m.ref === 'steal');
    assert.ok(['FLEETD_ERR_LEASE_LOST', 'FLEETD_ERR_TASK_STATE'].includes(refused.error.code), refused.error.code);
    assert.equal((await api.get(`/v1/tasks/${task.id}`)).body.status, 'queued');
    await peer.close();
  });

  it('carries usage with complete, fail and batch items, and releases a task for later without spending an attempt', async () => {
    const { api, url } = server;
    const type = 'ws-usage';
    const agent = await api.registerAgent([type], { maxConcurrency: 5 });
    const { peer } = await connectAgent(url, agent);
    peer.send({ type: 'credit', add: 5 });
    const submitted = [];
    for (let i = 0; i < 4; i++) submitted.push(await api.submit({ type, concurrencyKey: 'tenant-a', maxAttempts: 1 }));
    const pushed: any[] = [];
    while (pushed.length < 4) pushed.push(...(await peer.next('tasks')).tasks);
    const [one, two, three, four] = submitted.map((t) => t.id);

    // Bad usage and a negative delay are refused, and change nothing (a message that fails its schema has its ref in the details).
    peer.send({ type: 'complete', id: one, usage: { inputTokens: -5 }, ref: 'neg' });
    assert.equal((await peer.next('error', (m) => m.error.details?.ref === 'neg')).error.code, 'FLEETD_ERR_VALIDATION');
    peer.send({ type: 'release', id: one, delayMs: -1, ref: 'neg-delay' });
    assert.equal((await peer.next('error', (m) => m.error.details?.ref === 'neg-delay')).error.code, 'FLEETD_ERR_VALIDATION');
    peer.send({ type: 'batch', items: [{ op: 'complete', id: one, usage: { costUsd: -1 } }], ref: 'neg-batch' });
    assert.equal((await peer.next('error', (m) => m.error.details?.ref === 'neg-batch')).error.code, 'FLEETD_ERR_VALIDATION');
    assert.equal((await api.get(`/v1/tasks/${one}`)).body.status, 'leased');
    assert.equal((await api.get(`/v1/types/${type}`)).body.usage.day.reports, 0);

    peer.send({ type: 'complete', id: one, result: 'ok', usage: { inputTokens: 100, outputTokens: 10, costUsd: 0.1, model: 'm' }, ref: 'c' });
    assert.equal((await peer.next('ack', (m) => m.ref === 'c')).status, 'completed');
    peer.send({ type: 'fail', id: two, error: 'boom', retryable: false, usage: { inputTokens: 7 }, ref: 'f' });
    assert.equal((await peer.next('ack', (m) => m.ref === 'f')).status, 'dead');
    peer.send({ type: 'batch', items: [{ op: 'complete', id: three, usage: { outputTokens: 3, costUsd: 0.5 } }], ref: 'b' });
    assert.equal((await peer.next('batch', (m) => m.ref === 'b')).items[0].status, 'completed');
    peer.send({ type: 'release', id: four, delayMs: 60_000, reason: 'provider answered 429', usage: { inputTokens: 1 }, ref: 'r' });
    const released = await peer.next('ack', (m) => m.ref === 'r');
    assert.equal(released.status, 'scheduled');
    const four_ = (await api.get(`/v1/tasks/${four}`)).body;
    assert.equal(four_.attempts, 0, 'the release took back the attempt its push counted');
    assert.deepEqual(four_.error, { code: 'FLEETD_ERR_RELEASED', message: 'provider answered 429', delayMs: 60_000 });
    peer.send({ type: 'release', id: four, delayMs: 0, ref: 'again' });
    assert.equal((await peer.next('error', (m) => m.ref === 'again')).error.code, 'FLEETD_ERR_LEASE_LOST');

    const usage = (await api.get(`/v1/types/${type}`)).body.usage;
    assert.deepEqual(usage.day, { inputTokens: 108, outputTokens: 13, costUsd: 0.6, reports: 4 });
    assert.deepEqual(usage.keys.map((k: any) => k.key), ['tenant-a']);
    await peer.close();
  });

  it('closes the older socket when the same agent connects again, and a deleted agent\'s socket', async () => {
    const { api, url } = server;
    const agent = await api.registerAgent(['twice']);
    const first = await connectAgent(url, agent);
    const second = await connectAgent(url, agent);
    assert.equal((await first.peer.closed).code, 4409);
    assert.equal((await api.delete(`/v1/agents/${agent.id}`)).status, 200);
    assert.equal((await second.peer.closed).code, 4404);
  });

  it('answers a plain GET with a JSON error instead of a socket', async () => {
    const res = await server.api.get('/v1/events');
    assert.equal(res.status, 400);
    assert.equal(res.body.error.code, 'FLEETD_ERR_VALIDATION');
  });
});

describe('connection cap', () => {
  it('closes sockets past wsMaxConnections with 1013 and a reason', async () => {
    const server = await startTestServer({ wsMaxConnections: 2 });
    try {
      const a = await connect(`${server.url}/v1/events?token=${server.adminKey}`);
      const b = await connect(`${server.url}/v1/events?token=${server.adminKey}`);
      const c = await connect(`${server.url}/v1/events?token=${server.adminKey}`);
      const closed = await c.closed;
      assert.equal(closed.code, 1013);
      assert.match(closed.reason, /connection limit/);
      await a.close();
      const d = await connect(`${server.url}/v1/events?token=${server.adminKey}`);
      d.send({ type: 'subscribe', topics: ['tasks'] });
      assert.deepEqual((await d.next('subscribed')).topics, ['tasks']);
      await Promise.all([b.close(), d.close()]);
    } finally {
      await server.stop();
    }
  });
});

describe('agent stream protocol version', () => {
  it('accepts ?protocol=1 and refuses a version it does not speak with a 400', async () => {
    const server = await startTestServer();
    try {
      const agent = await server.api.registerAgent(['v']);
      const headers = { authorization: `Bearer ${agent.token}` };
      const peer = await connect(`${server.url}/v1/agents/${agent.id}/stream?protocol=1`, headers);
      assert.equal((await peer.next('welcome')).protocol, 1);
      await peer.close();
      await assert.rejects(connect(`${server.url}/v1/agents/${agent.id}/stream?protocol=2`, headers), (err: any) => {
        assert.equal(err.status, 400);
        assert.equal(err.body.error.details.field, 'querystring.protocol');
        return true;
      });
    } finally {
      await server.stop();
    }
  });
});

describe('ping/pong', () => {
  it('drops a peer that stops answering pings, and releases its agent after the grace', async () => {
    // Short enough for a quick test, long enough that a busy test process still answers in time.
    const server = await startTestServer({ wsPingMs: 500, agentDisconnectGraceMs: 0 });
    try {
      const agent = await server.api.registerAgent(['frozen']);
      const { peer } = await connectAgent(server.url, agent);
      peer.send({ type: 'credit', add: 1 });
      const task = await server.api.submit({ type: 'frozen' });
      await peer.next('tasks');
      const offline = nextEvent(server, 'agent.offline', (e) => e.agent.id === agent.id);
      // A frozen process: its socket stays open but nothing is read, so no pong ever goes back.
      (peer.socket as any)._socket.pause();
      await offline;
      assert.equal((await server.api.get('/v1/gateway')).body.connections, 0);
      assert.equal((await server.api.get(`/v1/tasks/${task.id}`)).body.status, 'queued');
      (peer.socket as any)._socket.resume();
      await peer.closed;
    } finally {
      await server.stop();
    }
  });

  it('drops a frozen peer while other sockets come and go faster than pings go round', async () => {
    const server = await startTestServer({ wsPingMs: 500, agentDisconnectGraceMs: 0 });
    const auth = { authorization: `Bearer ${server.adminKey}` };
    let stopChurn = false;
    let opened = 0;
    // Six clients each opening an observer socket, holding it 30 ms and closing it, over and over.
    const churn = Array.from({ length: 6 }, async () => {
      while (!stopChurn) {
        const peer = await connect(`${server.url}/v1/events`, auth).catch(() => undefined);
        if (peer) opened++;
        await new Promise((r) => setTimeout(r, 30));
        await peer?.close();
      }
    });
    try {
      const agent = await server.api.registerAgent(['frozen-churn']);
      const { peer } = await connectAgent(server.url, agent);
      const offline = nextEvent(server, 'agent.offline', (e) => e.agent.id === agent.id, 10_000);
      (peer.socket as any)._socket.pause();
      await offline;
      assert.ok(opened >= 20, `only ${opened} sockets came and went`);
      peer.socket.terminate();
    } finally {
      stopChurn = true;
      await Promise.all(churn);
      await server.stop();
    }
  });

  it('pings its sockets a slice at a time, each about once a period', async () => {
    // A ping to every socket in one turn took 130 ms at 10,000 sockets, and their pongs came back together.
    const periodMs = 1_000;
    const server = await startTestServer({ wsPingMs: periodMs });
    const peers: Peer[] = [];
    try {
      const agents = await Promise.all(Array.from({ length: 50 }, (_, i) => server.api.registerAgent([`ping-${i}`])));
      const pings = new Map<Peer, number[]>();
      for (const agent of agents) {
        const { peer } = await connectAgent(server.url, agent);
        peers.push(peer);
        pings.set(peer, []);
        peer.socket.on('ping', () => pings.get(peer)!.push(performance.now()));
      }
      // Rounds take the sockets there when they begin: from the second after the last socket came,
      // every round holds all 50 in the same order.
      const from = performance.now() + 2 * periodMs;
      const since = (times: number[]) => times.filter((t) => t >= from);
      await eventually(() => [...pings.values()].every((times) => since(times).length >= 3), 15_000, 'three pings on every socket');
      const firsts = [...pings.values()].map((times) => since(times)[0]);
      const spread = Math.max(...firsts) - Math.min(...firsts);
      assert.ok(spread >= 150, `50 sockets pinged within ${spread} ms`);
      for (const times of pings.values()) {
        const after = since(times);
        for (let i = 1; i < after.length; i++) assert.ok(after[i] - after[i - 1] >= periodMs / 2, `pinged again after ${after[i] - after[i - 1]} ms`);
      }
      assert.equal((await server.api.get('/v1/gateway')).body.connections, 50, 'every peer answered its pings and is still connected');
    } finally {
      await Promise.all(peers.map((peer) => peer.close()));
      await server.stop();
    }
  });

  it('heartbeats the agents connected to it, so that one which sends nothing never goes stale', async () => {
    const server = await startTestServer({ agentStaleMs: 1_000, agentOfflineMs: 2_000 });
    const peers: Peer[] = [];
    const stale: string[] = [];
    const off = server.fleet.bus.subscribe('agent.stale', (e) => void stale.push(e.agentId));
    try {
      const agents = await Promise.all(Array.from({ length: 20 }, (_, i) => server.api.registerAgent([`quiet-${i}`])));
      for (const agent of agents) peers.push((await connectAgent(server.url, agent)).peer);
      // A registered agent that neither beats nor connects goes stale in the same time.
      const unconnected = await server.api.registerAgent(['quiet-unconnected']);
      await eventually(() => stale.includes(unconnected.id), 10_000, 'the unconnected agent to go stale');
      await new Promise((r) => setTimeout(r, 2_500));
      assert.deepEqual(stale, [unconnected.id], 'only the agent with no socket went stale');
      for (const agent of agents) assert.equal((await server.api.get(`/v1/agents/${agent.id}`)).body.status, 'online');
    } finally {
      off();
      await Promise.all(peers.map((peer) => peer.close()));
      await server.stop();
    }
  });
});

/** The data frames a server sent (unmasked), read from the raw bytes: whether each is compressed (RSV1). */
function frameHeaders(data: Buffer): { compressed: boolean; length: number }[] {
  const frames: { compressed: boolean; length: number }[] = [];
  for (let at = 0; at < data.length; ) {
    const short = data[at + 1] & 0x7f;
    const [length, header] = short === 126 ? [data.readUInt16BE(at + 2), 4] : short === 127 ? [Number(data.readBigUInt64BE(at + 2)), 10] : [short, 2];
    // Control frames (a ping, opcode 0x8 and up) are never compressed: only messages are counted.
    if ((data[at] & 0x08) === 0) frames.push({ compressed: (data[at] & 0x40) !== 0, length });
    at += header + length;
  }
  return frames;
}
