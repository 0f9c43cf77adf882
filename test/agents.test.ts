import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { eventually, startTestServer, type TestServer } from './helpers.js';

describe('agents', () => {
  let server: TestServer;
  before(async () => {
    // Default heartbeat graces: the counts below must not move while they are read.
    server = await startTestServer();
  });
  after(() => server.stop());

  it('registers 50 agents concurrently, each with its own id and token', async () => {
    const { api } = server;
    const replies = await Promise.all(
      Array.from({ length: 50 }, (_, i) => api.post('/v1/agents', { name: `emp-${i}`, capabilities: ['code'] })),
    );
    assert.ok(replies.every((r) => r.status === 201));
    assert.equal(new Set(replies.map((r) => r.body.agent.id)).size, 50);
    assert.equal(new Set(replies.map((r) => r.body.token)).size, 50);
    const listed = (await api.get('/v1/agents?capability=code&limit=1000')).body.items;
    assert.equal(listed.length, 50);
  });

  it('registers a batch in one transaction, and rejects the whole batch for one bad item', async () => {
    const { api } = server;
    const ok = await api.post('/v1/agents/batch', {
      agents: Array.from({ length: 200 }, (_, i) => ({ name: `batch-${i}`, capabilities: ['batch'] })),
    });
    assert.equal(ok.status, 201);
    assert.equal(ok.body.items.length, 200);
    const bad = await api.post('/v1/agents/batch', {
      agents: [{ name: 'fine', capabilities: ['x-batch'] }, { name: 'bad', maxConcurrency: 0 }],
    });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.error.code, 'FLEETD_ERR_VALIDATION');
    assert.match(bad.body.error.details.field, /agents\.1\.maxConcurrency/);
    assert.equal((await api.get('/v1/agents?capability=x-batch')).body.items.length, 0);
  });

  it('pages through agents with a cursor and filters by status', async () => {
    const { api } = server;
    const ids = new Set<string>();
    let cursor: string | null = null;
    do {
      const res: any = await api.get(`/v1/agents?capability=batch&limit=64${cursor ? `&cursor=${cursor}` : ''}`);
      for (const a of res.body.items) ids.add(a.id);
      cursor = res.body.nextCursor;
    } while (cursor);
    assert.equal(ids.size, 200);
  });

  it('goes stale, then offline without heartbeats: its leases return to the queue and its locks are released', async () => {
    // A server of its own with short graces. Its events are collected from before the agent exists:
    // on a loaded machine the agent may go stale before the test gets to wait for it.
    const reaping = await startTestServer({ agentStaleMs: 1_000, agentOfflineMs: 2_000 });
    const seen: { name: 'stale' | 'offline'; id: string; status?: string }[] = [];
    const unsubscribe = [
      reaping.fleet.bus.subscribe('agent.stale', (e) => void seen.push({ name: 'stale', id: e.agentId })),
      reaping.fleet.bus.subscribe('agent.offline', (e) => void seen.push({ name: 'offline', id: e.agent.id, status: e.agent.status })),
    ];
    try {
      const { api } = reaping;
      const quiet = await api.registerAgent(['reap']);
      const other = await api.registerAgent(['reap']);
      const task = await api.submit({ type: 'reap', leaseMs: 60_000 });
      await api.claim(quiet.id);
      const lock = await api.post('/v1/locks', { agentId: quiet.id, resources: ['src/reap.ts'], ttlMs: 60_000 });
      assert.equal(lock.status, 200);
      // Keep the other agent alive while the quiet one misses its heartbeats.
      const keepAlive = setInterval(() => void api.post(`/v1/agents/${other.id}/heartbeat`), 100);
      try {
        await eventually(() => seen.some((e) => e.name === 'offline' && e.id === quiet.id), 20_000, 'the quiet agent to go offline');
      } finally {
        clearInterval(keepAlive);
      }
      const ofQuiet = seen.filter((e) => e.id === quiet.id);
      assert.deepEqual(ofQuiet.slice(-2).map((e) => e.name), ['stale', 'offline'], 'stale first, then offline');
      assert.equal(ofQuiet.at(-1)?.status, 'offline');
      assert.ok(!seen.some((e) => e.id === other.id), 'the agent that heartbeats stays online');
      const requeued = (await api.get(`/v1/tasks/${task.id}`)).body;
      assert.equal(requeued.status, 'queued');
      assert.equal((await api.get(`/v1/locks/${lock.body.id}`)).status, 404);
      const [again] = await api.claim(other.id);
      assert.equal(again.id, task.id);
      // A heartbeat brings it back online.
      const back = await api.post(`/v1/agents/${quiet.id}/heartbeat`);
      assert.equal(back.body.status, 'online');
    } finally {
      for (const off of unsubscribe) off();
      await reaping.stop();
    }
  });

  it('deleting an agent releases its tasks and locks', async () => {
    const { api } = server;
    const agent = await api.registerAgent(['gone']);
    const task = await api.submit({ type: 'gone' });
    await api.claim(agent.id);
    await api.post('/v1/locks', { agentId: agent.id, resources: ['db/users'], ttlMs: 60_000 });
    assert.equal((await api.delete(`/v1/agents/${agent.id}`)).status, 200);
    assert.equal((await api.get(`/v1/agents/${agent.id}`)).status, 404);
    assert.equal((await api.get(`/v1/tasks/${task.id}`)).body.status, 'queued');
    const other = await api.registerAgent(['gone']);
    assert.equal((await api.post('/v1/locks', { agentId: other.id, resources: ['db/users'], ttlMs: 1000 })).status, 200);
  });

  it("lists the tasks leased to an agent, with their dependencies' results, to its own token alone", async () => {
    const { api } = server;
    const agent = await api.registerAgent(['held']);
    const other = await api.registerAgent(['held']);
    const first = await api.submit({ type: 'held' });
    const [claimedFirst] = await api.as(agent.token).claim(agent.id);
    assert.equal((await api.as(agent.token).post(`/v1/tasks/${claimedFirst.id}/complete`, { agentId: agent.id, result: { n: 1 } })).status, 200);
    const join = await api.submit({ type: 'held', dependsOn: [first.id] });
    const plain = await api.submit({ type: 'held' });
    const claimed = await api.as(agent.token).claim(agent.id, 2);
    assert.deepEqual(claimed.map((t) => t.id).sort(), [join.id, plain.id].sort());

    const leases = await api.as(agent.token).get(`/v1/agents/${agent.id}/leases`);
    assert.equal(leases.status, 200);
    assert.equal(leases.headers.get('content-type'), 'application/json; charset=utf-8');
    const byId = new Map(leases.body.tasks.map((t: any) => [t.id, t]));
    assert.deepEqual([...byId.keys()].sort(), [join.id, plain.id].sort());
    for (const t of claimed) {
      assert.equal((byId.get(t.id) as any).leaseExpiresAt, t.leaseExpiresAt, 'the lease the claim handed out');
      assert.deepEqual((byId.get(t.id) as any).dependencies, t.dependencies);
    }
    assert.deepEqual((byId.get(join.id) as any).dependencies, [{ id: first.id, status: 'completed', result: { n: 1 }, error: null }]);
    // An admin key may read any agent's; another agent's token may not, and an unknown agent is 404.
    assert.equal((await api.get(`/v1/agents/${agent.id}/leases`)).body.tasks.length, 2);
    assert.equal((await api.as(other.token).get(`/v1/agents/${agent.id}/leases`)).status, 403);
    const unknown = await api.get('/v1/agents/6f1c2d3e-0000-4000-8000-000000000001/leases');
    assert.equal(unknown.status, 404);
    assert.equal(unknown.body.error.code, 'FLEETD_ERR_NOT_FOUND');
    assert.equal((await api.get(`/v1/agents/${'x'.repeat(65)}/leases`)).status, 400);
    assert.deepEqual((await api.as(other.token).get(`/v1/agents/${other.id}/leases`)).body, { tasks: [] });
  });

  it('counts agents by status in /v1/stats', async () => {
    const { api } = server;
    const stats = (await api.get('/v1/stats')).body;
    const listed = async (status: string) => {
      let n = 0;
      let cursor: string | null = null;
      do {
        const res: any = await api.get(`/v1/agents?status=${status}&limit=1000${cursor ? `&cursor=${cursor}` : ''}`);
        n += res.body.items.length;
        cursor = res.body.nextCursor;
      } while (cursor);
      return n;
    };
    const total = stats.agents.byStatus.online + stats.agents.byStatus.stale + stats.agents.byStatus.offline;
    assert.equal(total, (await listed('online')) + (await listed('stale')) + (await listed('offline')));
  });
});

describe('the presence flush', () => {
  // Its own server, whose flush timer (every agentStaleMs / 4 at the most) does not fire during a test.
  let flushing: TestServer;
  before(async () => {
    flushing = await startTestServer({ agentStaleMs: 600_000, agentOfflineMs: 1_200_000, agentSeenFlushMs: 600_000 });
  });
  after(() => flushing.stop());

  it('writes the beats of more agents than one write holds, every one of them, at the flush, a slice a write', async () => {
    const { api, fleet } = flushing;
    const agents: { id: string }[] = [];
    for (let i = 0; i < 1_200; i += 600) {
      const batch = await api.post('/v1/agents/batch', { agents: Array.from({ length: 600 }, (_, k) => ({ name: `flush-${i + k}`, capabilities: ['flush'] })) });
      agents.push(...batch.body.items.map((item: { agent: { id: string } }) => item.agent));
    }
    await new Promise((r) => setTimeout(r, 5));
    // Registered agents are known online: a beat of each is held in memory until the flush.
    const held = new Map(agents.map(({ id }) => [id, fleet.agents.heartbeatInMemory(id)?.lastHeartbeatAt]));
    assert.ok([...held.values()].every((at) => at !== undefined), 'every beat answered from memory');
    const writes = recordTouches(fleet.store);
    try {
      await fleet.presence.flush();
    } finally {
      writes.restore();
    }
    const stored = await Promise.all(agents.map(({ id }) => fleet.store.agentGet({ id })));
    const behind = stored.filter((agent) => agent!.lastHeartbeatAt < held.get(agent!.id)!);
    assert.equal(behind.length, 0, `${behind.length} of 1,200 agents' beats not written`);
    assert.deepEqual(writes.sizes, [500, 500, 200], 'agents a write');
  });

  it('writes, when asked to flush during a flush, the beats noted since that flush began', async () => {
    const { api, fleet } = flushing;
    const agent = await api.registerAgent(['flush']);
    await new Promise((r) => setTimeout(r, 5));
    const underWay = fleet.presence.flush();
    const beat = fleet.agents.heartbeatInMemory(agent.id)!.lastHeartbeatAt;
    await fleet.presence.flush();
    assert.equal((await fleet.store.agentGet({ id: agent.id }))!.lastHeartbeatAt, beat);
    await underWay;
  });

  it('keeps the beats of a slice that failed, and those after it, for the next flush', async () => {
    const { api, fleet } = flushing;
    const ids: string[] = [];
    for (let i = 0; i < 1_100; i += 550) {
      const batch = await api.post('/v1/agents/batch', { agents: Array.from({ length: 550 }, (_, k) => ({ name: `refused-${i + k}`, capabilities: ['flush'] })) });
      ids.push(...batch.body.items.map((item: { agent: { id: string } }) => item.agent.id));
    }
    await fleet.presence.flush();
    await new Promise((r) => setTimeout(r, 5));
    const held = new Map(ids.map((id) => [id, fleet.agents.heartbeatInMemory(id)!.lastHeartbeatAt]));
    const writes = recordTouches(fleet.store, 2);
    try {
      await assert.rejects(fleet.presence.flush(), /refused for the test/);
    } finally {
      writes.restore();
    }
    const storedAt = async () => new Map((await Promise.all(ids.map((id) => fleet.store.agentGet({ id })))).map((a) => [a!.id, a!.lastHeartbeatAt]));
    const afterFailure = await storedAt();
    const written = ids.filter((id) => afterFailure.get(id)! >= held.get(id)!);
    assert.equal(written.length, writes.sizes[0], 'the slice before the failure was written, and no other');
    await fleet.presence.flush();
    const afterRetry = await storedAt();
    assert.deepEqual(
      ids.filter((id) => afterRetry.get(id)! < held.get(id)!),
      [],
      'the next flush wrote the rest',
    );
  });
});

/** Records the size of each write of last-seen times the store is asked for; with `failAt`, that write (1-based) fails. */
function recordTouches(store: TestServer['fleet']['store'], failAt?: number) {
  const sizes: number[] = [];
  const touch = store.agentTouchMany;
  (store as { agentTouchMany: typeof touch }).agentTouchMany = (params) => {
    sizes.push(params.seen.length);
    if (sizes.length === failAt) return Promise.reject(new Error('refused for the test'));
    return touch.call(store, params);
  };
  return { sizes, restore: () => ((store as { agentTouchMany: typeof touch }).agentTouchMany = touch) };
}
