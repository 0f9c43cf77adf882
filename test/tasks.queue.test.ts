import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { eventually, nextEvent, startTestServer, type TestServer } from './helpers.js';

describe('task queue', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(() => server.stop());
  /** Resolves once `n` long-polls wait on the server, registered to be woken. */
  const claimsWaiting = (n: number) => eventually(() => server.fleet.waiters.size >= n, 5_000, `${n} long-polls waiting`);

  it('hands out higher priority first and FIFO within a priority', async () => {
    const { api } = server;
    const agent = await api.registerAgent(['order']);
    const ids: Record<string, number> = {};
    for (const [name, priority] of [['low-1', 0], ['high-1', 10], ['low-2', 0], ['mid', 5], ['high-2', 10]] as const) {
      ids[name] = (await api.submit({ type: 'order', payload: { name }, priority })).id;
    }
    const claimed = await api.claim(agent.id, 10);
    assert.deepEqual(
      claimed.map((t) => t.payload.name),
      ['high-1', 'high-2', 'mid', 'low-1', 'low-2'],
    );
    assert.ok(claimed.every((t) => t.status === 'leased' && t.agentId === agent.id && t.attempts === 1));
  });

  it('routes tasks only to agents with every required capability', async () => {
    const { api } = server;
    const crawler = await api.registerAgent(['crawl']);
    const gpu = await api.registerAgent(['crawl', 'gpu']);
    const task = await api.submit({ type: 'render', requires: ['crawl', 'gpu'] });
    assert.deepEqual(await api.claim(crawler.id, 5), []);
    const got = await api.claim(gpu.id, 5);
    assert.deepEqual(got.map((t) => t.id), [task.id]);
  });

  it('defaults requires to the task type, and [] lets any agent take it', async () => {
    const { api } = server;
    const agent = await api.registerAgent(['summarize']);
    const typed = await api.submit({ type: 'summarize' });
    const anyone = await api.submit({ type: 'misc-no-agent-has-this', requires: [] });
    assert.deepEqual(typed.requires, ['summarize']);
    const got = (await api.claim(agent.id, 10)).map((t) => t.id).sort();
    assert.deepEqual(got, [typed.id, anyone.id].sort());
  });

  it('keeps delayed tasks back until runAt, then queues them by timer', async () => {
    const { api } = server;
    const agent = await api.registerAgent(['later']);
    const task = await api.submit({ type: 'later', delayMs: 300 });
    assert.equal(task.status, 'scheduled');
    assert.deepEqual(await api.claim(agent.id), []);
    const got = await api.claim(agent.id, 1, 5_000);
    assert.equal(got[0]?.id, task.id);
    assert.ok(Date.parse(got[0].claimedAt) >= Date.parse(task.runAt), 'not handed out before its runAt');
  });

  it('returns the first task for a repeated idempotency key, never a second one', async () => {
    const { api } = server;
    const body = { type: 'once', payload: { n: 1 }, idempotencyKey: 'key-1' };
    const first = await api.post('/v1/tasks', body);
    const again = await Promise.all([api.post('/v1/tasks', body), api.post('/v1/tasks', body)]);
    assert.equal(first.status, 201);
    for (const r of again) {
      assert.equal(r.status, 200);
      assert.equal(r.body.created, false);
      assert.equal(r.body.task.id, first.body.task.id);
    }
    const list = await api.get('/v1/tasks?type=once');
    assert.equal(list.body.items.length, 1);
    const conflict = await api.post('/v1/tasks', { ...body, payload: { n: 2 } });
    assert.equal(conflict.status, 409);
    assert.equal(conflict.body.error.code, 'FLEETD_ERR_IDEMPOTENCY_CONFLICT');
  });

  it('re-queues a task whose lease expires, with attempts counted', async () => {
    const { api } = server;
    const a = await api.registerAgent(['lease']);
    const b = await api.registerAgent(['lease']);
    const task = await api.submit({ type: 'lease', leaseMs: 200, maxAttempts: 3 });
    await api.claim(a.id);
    const requeued = nextEvent(server, 'task.requeued', (e) => e.task.id === task.id);
    assert.equal((await requeued).reason, 'lease_expired');
    const late = await api.post(`/v1/tasks/${task.id}/complete`, { agentId: a.id });
    assert.equal(late.status, 409);
    assert.equal(late.body.error.code, 'FLEETD_ERR_LEASE_LOST');
    const [again] = await api.claim(b.id);
    assert.equal(again.id, task.id);
    assert.equal(again.attempts, 2);
    const done = await api.post(`/v1/tasks/${task.id}/complete`, { agentId: b.id, result: { ok: true } });
    assert.equal(done.status, 200);
    assert.equal(done.body.status, 'completed');
    assert.deepEqual(done.body.result, { ok: true });
  });

  it('extends a lease so that it does not expire while work goes on', async () => {
    const { api } = server;
    const agent = await api.registerAgent(['long']);
    const task = await api.submit({ type: 'long', leaseMs: 1_500 });
    await api.claim(agent.id);
    for (let i = 0; i < 4; i++) {
      await new Promise((r) => setTimeout(r, 500));
      const ext = await api.post(`/v1/tasks/${task.id}/extend`, { agentId: agent.id });
      assert.equal(ext.status, 200);
    }
    const done = await api.post(`/v1/tasks/${task.id}/complete`, { agentId: agent.id });
    assert.equal(done.status, 200);
    assert.equal(done.body.attempts, 1);
  });

  it('only the lease holder may complete, fail or extend', async () => {
    const { api } = server;
    const holder = await api.registerAgent(['owned']);
    const other = await api.registerAgent(['owned']);
    const task = await api.submit({ type: 'owned' });
    await api.claim(holder.id);
    for (const action of ['complete', 'fail', 'extend']) {
      const res = await api.post(`/v1/tasks/${task.id}/${action}`, { agentId: other.id });
      assert.equal(res.status, 409, action);
      assert.equal(res.body.error.code, 'FLEETD_ERR_LEASE_LOST');
    }
    assert.equal((await api.get(`/v1/tasks/${task.id}`)).body.status, 'leased');
  });

  it('retries failures with exponential backoff, then dead-letters them after maxAttempts', async () => {
    const { api } = server;
    const agent = await api.registerAgent(['flaky']);
    const task = await api.submit({ type: 'flaky', maxAttempts: 3, backoffMs: 200 });
    // Server timestamps, so that a busy test process cannot blur the measurement.
    const failures: { at: number; runAt: number }[] = [];
    for (let attempt = 1; attempt <= 3; attempt++) {
      const [t] = await api.claim(agent.id, 1, 5_000);
      assert.equal(t.id, task.id);
      assert.equal(t.attempts, attempt);
      if (attempt > 1) assert.ok(Date.parse(t.claimedAt) >= failures[attempt - 2].runAt, 'not handed out before its backoff ended');
      const res = await api.post(`/v1/tasks/${task.id}/fail`, { agentId: agent.id, error: { attempt } });
      assert.equal(res.body.status, attempt < 3 ? 'scheduled' : 'dead');
      failures.push({ at: Date.parse(res.body.updatedAt), runAt: Date.parse(res.body.runAt) });
    }
    // Backoff: 200 ms then 400 ms, each shortened by at most 20 % of jitter.
    const waits = failures.slice(0, 2).map((f) => f.runAt - f.at);
    assert.ok(waits[0] >= 160 && waits[0] <= 200, `first backoff ${waits[0]} ms`);
    assert.ok(waits[1] >= 320 && waits[1] <= 400, `second backoff ${waits[1]} ms`);
    const dead = (await api.get(`/v1/tasks/${task.id}`)).body;
    assert.equal(dead.status, 'dead');
    assert.deepEqual(dead.error, { attempt: 3 });
  });

  it('dead-letters a non-retryable failure at once, and retry brings it back', async () => {
    const { api } = server;
    const agent = await api.registerAgent(['fatal']);
    const task = await api.submit({ type: 'fatal', maxAttempts: 5 });
    await api.claim(agent.id);
    const res = await api.post(`/v1/tasks/${task.id}/fail`, { agentId: agent.id, error: 'bad input', retryable: false });
    assert.equal(res.body.status, 'dead');
    const retried = await api.post(`/v1/tasks/${task.id}/retry`);
    assert.equal(retried.body.status, 'queued');
    assert.equal(retried.body.attempts, 0);
    assert.equal((await api.claim(agent.id))[0].id, task.id);
  });

  it('cancels queued and leased tasks, and refuses to cancel finished ones', async () => {
    const { api } = server;
    const agent = await api.registerAgent(['cancel']);
    const queued = await api.submit({ type: 'cancel' });
    const cancelled = await api.delete(`/v1/tasks/${queued.id}`);
    assert.equal(cancelled.body.status, 'cancelled');
    assert.deepEqual(await api.claim(agent.id), []);
    const again = await api.delete(`/v1/tasks/${queued.id}`);
    assert.equal(again.status, 409);
    assert.equal(again.body.error.code, 'FLEETD_ERR_TASK_STATE');
    const leased = await api.submit({ type: 'cancel' });
    await api.claim(agent.id);
    await api.delete(`/v1/tasks/${leased.id}`);
    const late = await api.post(`/v1/tasks/${leased.id}/complete`, { agentId: agent.id });
    // Its holder is told why it lost the lease: the cancel.
    assert.equal(late.body.error.code, 'FLEETD_ERR_CANCELLED');
    const other = await api.registerAgent(['cancel']);
    const stranger = await api.post(`/v1/tasks/${leased.id}/complete`, { agentId: other.id });
    assert.equal(stranger.body.error.code, 'FLEETD_ERR_LEASE_LOST', 'an agent that never held it');
  });

  it('wakes a long-polling claim the moment a matching task arrives', async () => {
    const { api } = server;
    const agent = await api.registerAgent(['wake']);
    const waiting = api.claim(agent.id, 1, 10_000);
    await claimsWaiting(1);
    const submittedAt = Date.now();
    const task = await api.submit({ type: 'wake' });
    const [got] = await waiting;
    assert.equal(got.id, task.id);
    assert.ok(Date.now() - submittedAt < 3_000, 'woken by the submit, not by its timeout');
  });

  it("a full agent's long-poll sleeps through new tasks and does not take another agent's wake-up", async () => {
    const { api } = server;
    const full = await api.registerAgent(['busy'], { maxConcurrency: 1 });
    const idle = await api.registerAgent(['busy']);
    await api.submit({ type: 'busy' });
    await api.claim(full.id);
    const fullWaits = api.claim(full.id, 1, 1_500);
    await claimsWaiting(1);
    const idleWaits = api.claim(idle.id, 1, 10_000);
    await claimsWaiting(2);
    const started = Date.now();
    const task = await api.submit({ type: 'busy' });
    assert.equal((await idleWaits)[0]?.id, task.id);
    assert.ok(Date.now() - started < 3_000, 'the idle agent was woken at once');
    assert.deepEqual(await fullWaits, []);
  });

  it("wakes a full agent's long-poll when one of its own leases ends and frees room", async () => {
    const { api } = server;
    const agent = await api.registerAgent(['room'], { maxConcurrency: 1 });
    const first = await api.submit({ type: 'room' });
    const second = await api.submit({ type: 'room' });
    assert.deepEqual((await api.claim(agent.id)).map((t) => t.id), [first.id]);
    const waiting = api.claim(agent.id, 1, 10_000);
    await claimsWaiting(1);
    const completedAt = Date.now();
    await api.post(`/v1/tasks/${first.id}/complete`, { agentId: agent.id });
    assert.deepEqual((await waiting).map((t) => t.id), [second.id]);
    assert.ok(Date.now() - completedAt < 3_000, 'woken by its completion, not by the timeout');
  });

  it("ends an agent's waiting long-poll with no tasks when one of its leases expires: a frozen agent takes nothing more", async () => {
    const { api } = server;
    const agent = await api.registerAgent(['frozen']);
    const other = await api.registerAgent(['frozen']);
    const task = await api.submit({ type: 'frozen', leaseMs: 300 });
    assert.deepEqual((await api.claim(agent.id)).map((t) => t.id), [task.id]);
    const startedAt = Date.now();
    const waiting = await api.claim(agent.id, 1, 10_000);
    assert.deepEqual(waiting, [], 'the expired lease ended the wait without handing the task back to its holder');
    assert.ok(Date.now() - startedAt < 8_000, 'ended by the expiry, not by waitMs');
    const [again] = await api.claim(other.id);
    assert.equal(again.id, task.id);
    assert.equal(again.attempts, 2);
  });

  it('hands a wake-up on when the woken agent takes a higher-priority task of another kind', async () => {
    const { api } = server;
    const both = await api.registerAgent(['kind-a', 'kind-b']);
    const onlyA = await api.registerAgent(['kind-a']);
    const bothWaits = api.claim(both.id, 1, 10_000);
    await claimsWaiting(1);
    const aWaits = api.claim(onlyA.id, 1, 10_000);
    await claimsWaiting(2);
    const started = Date.now();
    const res = await api.post('/v1/tasks/batch', {
      tasks: [
        { type: 'kind-a', priority: 0 },
        { type: 'kind-b', priority: 10 },
      ],
    });
    const [a, b] = res.body.items.map((i: any) => i.task.id);
    assert.deepEqual((await bothWaits).map((t) => t.id), [b]);
    assert.deepEqual((await aWaits).map((t) => t.id), [a]);
    assert.ok(Date.now() - started < 3_000, 'the agent that can only do kind-a was woken at once');
  });

  it('stops the long-poll of a client that hangs up, on both claim routes: a task submitted after goes to the next agent', async () => {
    const { api } = server;
    const gone = await api.registerAgent(['hang-up']);
    const next = await api.registerAgent(['hang-up']);
    const held = await api.submit({ type: 'hang-up' });
    assert.deepEqual((await api.claim(gone.id)).map((t) => t.id), [held.id]);
    const waitingBefore = server.fleet.waiters.size;
    const claims: [string, unknown][] = [
      ['/v1/tasks/claim', { agentId: gone.id, max: 1, waitMs: 20_000 }],
      // The batch's item is written; only its claim waits.
      ['/v1/tasks/complete', { agentId: gone.id, items: [{ op: 'complete', id: held.id }], claim: { max: 1, waitMs: 20_000 } }],
    ];
    for (const [path, body] of claims) {
      const request = httpRequest(`${server.url}${path}`, { method: 'POST', headers: { authorization: `Bearer ${server.adminKey}`, 'content-type': 'application/json' } });
      request.on('error', () => {});
      try {
        request.end(JSON.stringify(body));
        await claimsWaiting(waitingBefore + 1);
      } finally {
        request.destroy();
      }
      await eventually(() => server.fleet.waiters.size === waitingBefore, 5_000, `${path}: the long-poll stopped waiting when its client hung up`);
      const task = await api.submit({ type: 'hang-up' });
      assert.deepEqual((await api.claim(next.id, 1, 5_000)).map((t) => t.id), [task.id], `${path}: the task went to the agent still there`);
      assert.equal((await api.get(`/v1/tasks/${task.id}`)).body.agentId, next.id);
    }
    assert.equal((await api.get(`/v1/tasks/${held.id}`)).body.status, 'completed');
  });

  it('answers an empty long-poll after waitMs', async () => {
    const { api } = server;
    const agent = await api.registerAgent(['nothing-ever']);
    const started = Date.now();
    assert.deepEqual(await api.claim(agent.id, 1, 300), []);
    assert.ok(Date.now() - started >= 290);
  });

  it("never hands an agent more tasks than its maxConcurrency", async () => {
    const { api } = server;
    const agent = await api.registerAgent(['capped'], { maxConcurrency: 2 });
    for (let i = 0; i < 5; i++) await api.submit({ type: 'capped' });
    assert.equal((await api.claim(agent.id, 10)).length, 2);
    assert.equal((await api.claim(agent.id, 10)).length, 0);
  });

  it('lists tasks with filters and cursor pagination', async () => {
    const { api } = server;
    for (let i = 0; i < 25; i++) await api.submit({ type: 'paged', payload: { i } });
    const seen: number[] = [];
    let cursor: string | null = null;
    do {
      const res: any = await api.get(`/v1/tasks?type=paged&limit=10${cursor ? `&cursor=${cursor}` : ''}`);
      assert.equal(res.status, 200);
      seen.push(...res.body.items.map((t: any) => t.payload.i));
      cursor = res.body.nextCursor;
    } while (cursor);
    assert.deepEqual(seen, [...Array(25).keys()].reverse());
  });

  it('streams any number of tasks as NDJSON', async () => {
    const { api } = server;
    const tasks = Array.from({ length: 1_200 }, (_, i) => ({ type: 'exported', payload: { i } }));
    assert.equal((await api.post('/v1/tasks/batch', { tasks })).status, 201);
    const res = await fetch(`${api.base}/v1/tasks/export?type=exported`, { headers: { authorization: `Bearer ${api.key}` } });
    assert.equal(res.headers.get('content-type'), 'application/x-ndjson');
    const lines = (await res.text()).trim().split('\n').map((l) => JSON.parse(l));
    assert.equal(lines.length, 1_200);
    assert.deepEqual(lines.map((t) => t.payload.i), [...Array(1_200).keys()]);
  });
});
