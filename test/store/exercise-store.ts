import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { FleetError } from '../../src/domain/errors.js';
import type { Task, TaskStatus } from '../../src/domain/types.js';
import type { Store, TaskInsertParams } from '../../src/store/store.js';

/** A fresh, migrated, empty store, and what removes it afterwards. */
export type StoreFactory = () => Promise<{ store: Store; destroy(): Promise<void> }>;

const T0 = 1_700_000_000_000;

function task(type: string, extra: Partial<TaskInsertParams> = {}): TaskInsertParams {
  return {
    type,
    payload: { type },
    priority: 0,
    requires: [type],
    idempotencyKey: null,
    maxAttempts: 3,
    leaseMs: 1_000,
    backoffMs: 100,
    runAt: T0,
    ...extra,
  };
}

async function rejectsWith(promise: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof FleetError, `expected a FleetError, got ${err}`);
    assert.equal(err.code, code);
    return true;
  });
}

/** Every task, through the public listing (paged), to recount what the counters claim. */
async function allTasks(store: Store): Promise<Task[]> {
  const out: Task[] = [];
  let cursor: string | undefined;
  do {
    const page = await store.taskList({ limit: 7, cursor, order: 'asc' });
    out.push(...page.items);
    cursor = page.nextCursor ?? undefined;
  } while (cursor);
  return out;
}

async function assertCountersEqualRecount(store: Store): Promise<void> {
  const recount = new Map<string, number>();
  for (const t of await allTasks(store)) {
    const key = `${t.type}|${t.priority}|${t.status}`;
    recount.set(key, (recount.get(key) ?? 0) + 1);
  }
  const counted = new Map((await store.taskCounts()).map((c) => [`${c.type}|${c.priority}|${c.status}`, c.count]));
  assert.deepEqual(Object.fromEntries([...counted].sort()), Object.fromEntries([...recount].sort()));
  const agentRecount: Record<string, number> = { online: 0, stale: 0, offline: 0 };
  let cursor: string | undefined;
  do {
    const page = await store.agentList({ limit: 5, cursor });
    for (const a of page.items) agentRecount[a.status]++;
    cursor = page.nextCursor ?? undefined;
  } while (cursor);
  const agentCounted = Object.fromEntries((await store.agentCounts()).map((c) => [c.status, c.count]));
  assert.deepEqual(agentCounted, agentRecount);
}

/**
 * The conformance suite every Store driver passes: each behaviour the core relies on, tested once,
 * through the Store interface only, with the clock passed in.
 */
export function exerciseStore(driver: string, factory: StoreFactory): void {
  describe(`${driver} store`, { timeout: 60_000 }, () => {
    let store: Store;
    let destroy: () => Promise<void>;
    let agentSeq = 0;

    beforeEach(async () => {
      ({ store, destroy } = await factory());
    });
    afterEach(async () => {
      await destroy();
    });

    async function agent(capabilities: string[], maxConcurrency = 10, now = T0): Promise<string> {
      const id = `agent-${++agentSeq}`;
      await store.agentCreateMany([
        { id, name: id, capabilities, labels: { role: 'test' }, maxConcurrency, tokenHash: `hash-${id}`, now },
      ]);
      return id;
    }

    async function submit(...tasks: TaskInsertParams[]): Promise<Task[]> {
      return (await store.taskInsertMany({ tasks, now: T0 })).map((r) => r.task);
    }

    it('ClaimsHighestPriorityFirstThenOldest across requirement sets', async () => {
      const a = await agent(['x', 'y']);
      const made = await submit(
        task('x', { payload: 'x-low' }),
        task('y', { payload: 'y-high', priority: 5 }),
        task('x', { payload: 'x-high', priority: 5 }),
        task('both', { payload: 'both-mid', priority: 2, requires: ['x', 'y'] }),
        task('y', { payload: 'y-low' }),
      );
      assert.deepEqual(made.map((t) => t.status), ['queued', 'queued', 'queued', 'queued', 'queued']);
      const first = await store.taskClaim({ agentId: a, max: 3, now: T0 });
      assert.deepEqual(first.tasks.map((t) => t.payload), ['y-high', 'x-high', 'both-mid']);
      assert.equal(first.room, 7, 'maxConcurrency 10 less the 3 it now holds');
      const rest = await store.taskClaim({ agentId: a, max: 10, now: T0 });
      assert.deepEqual(rest.tasks.map((t) => t.payload), ['x-low', 'y-low']);
      for (const t of [...first.tasks, ...rest.tasks]) {
        assert.equal(t.status, 'leased');
        assert.equal(t.agentId, a);
        assert.equal(t.attempts, 1);
        assert.equal(t.leaseExpiresAt, T0 + 1_000);
      }
    });

    it('HandsOutOnlyTasksWhoseRequirementsTheAgentHasAll', async () => {
      const crawler = await agent(['crawl']);
      const gpu = await agent(['crawl', 'gpu']);
      const [render, anyone] = await submit(task('render', { requires: ['gpu', 'crawl'] }), task('misc', { requires: [] }));
      assert.deepEqual((await store.taskClaim({ agentId: crawler, max: 5, now: T0 })).tasks.map((t) => t.id), [anyone.id]);
      assert.deepEqual((await store.taskClaim({ agentId: gpu, max: 5, now: T0 })).tasks.map((t) => t.id), [render.id]);
      assert.deepEqual(render.requires, ['crawl', 'gpu']);
    });

    it('NeverExceedsMaxConcurrency even with concurrent claims by one agent', async () => {
      const a = await agent(['c'], 3);
      await submit(...Array.from({ length: 10 }, () => task('c')));
      const claims = await Promise.all(Array.from({ length: 6 }, () => store.taskClaim({ agentId: a, max: 2, now: T0 })));
      assert.equal(claims.flatMap((c) => c.tasks).length, 3);
      const full = await store.taskClaim({ agentId: a, max: 2, now: T0 });
      assert.deepEqual([full.tasks, full.room], [[], 0]);
      assert.equal((await store.taskList({ agentId: a, status: 'leased', limit: 100 })).items.length, 3);
    });

    it('GivesEachTaskToOneAgentUnderConcurrentClaims', async () => {
      const agents = await Promise.all(Array.from({ length: 8 }, () => agent(['race'], 100)));
      const made = await submit(...Array.from({ length: 60 }, () => task('race')));
      const claims = await Promise.all(agents.flatMap((a) => [1, 2, 3].map(() => store.taskClaim({ agentId: a, max: 4, now: T0 }))));
      const ids = claims.flatMap((c) => c.tasks.map((t) => t.id));
      assert.equal(new Set(ids).size, ids.length, 'no task handed out twice');
      const again = await Promise.all(agents.map((a) => store.taskClaim({ agentId: a, max: 100, now: T0 })));
      const all = [...ids, ...again.flatMap((c) => c.tasks.map((t) => t.id))].sort((x, y) => x - y);
      assert.deepEqual(all, made.map((t) => t.id));
    });

    it('CountsAClaimAsAHeartbeatAndReportsThePreviousStatus', async () => {
      const a = await agent(['h']);
      assert.deepEqual(await store.agentMarkStale({ staleBefore: T0 + 1, now: T0 + 1, limit: 10 }), [a]);
      const claim = await store.taskClaim({ agentId: a, max: 1, now: T0 + 5 });
      assert.equal(claim.previousStatus, 'stale');
      assert.equal(claim.agent.status, 'online');
      assert.equal(claim.agent.lastHeartbeatAt, T0 + 5);
      await rejectsWith(store.taskClaim({ agentId: 'nobody', max: 1, now: T0 }), 'FLEETD_ERR_NOT_FOUND');
    });

    it('LetsOnlyTheLeaseHolderCompleteFailOrExtend, and extends from now', async () => {
      const a = await agent(['l']);
      const b = await agent(['l']);
      const [t] = await submit(task('l'));
      await store.taskClaim({ agentId: a, max: 1, now: T0 });
      await rejectsWith(store.taskComplete({ id: t.id, agentId: b, result: 1, now: T0 }), 'FLEETD_ERR_LEASE_LOST');
      await rejectsWith(store.taskExtendLease({ id: t.id, agentId: b, now: T0 }), 'FLEETD_ERR_LEASE_LOST');
      await rejectsWith(
        store.taskFail({ id: t.id, agentId: b, error: 'x', retryable: true, now: T0, retryDelay: () => 0 }),
        'FLEETD_ERR_LEASE_LOST',
      );
      await rejectsWith(store.taskComplete({ id: 999_999, agentId: a, result: 1, now: T0 }), 'FLEETD_ERR_NOT_FOUND');
      const extended = await store.taskExtendLease({ id: t.id, agentId: a, leaseMs: 5_000, now: T0 + 500 });
      assert.equal(extended.leaseExpiresAt, T0 + 5_500);
      const byDefault = await store.taskExtendLease({ id: t.id, agentId: a, now: T0 + 600 });
      assert.equal(byDefault.leaseExpiresAt, T0 + 1_600);
      const done = await store.taskComplete({ id: t.id, agentId: a, result: { ok: [1, 2] }, now: T0 + 700 });
      assert.equal(done.status, 'completed');
      assert.deepEqual(done.result, { ok: [1, 2] });
      assert.equal(done.completedAt, T0 + 700);
      assert.equal(done.leaseExpiresAt, null);
      await rejectsWith(store.taskComplete({ id: t.id, agentId: a, result: 1, now: T0 }), 'FLEETD_ERR_LEASE_LOST');
    });

    it('AcknowledgesOneOfConcurrentCompletionsOfOneTask, and each of many different ones', async () => {
      const a = await agent(['cc'], 50);
      const made = await submit(...Array.from({ length: 20 }, () => task('cc')));
      await store.taskClaim({ agentId: a, max: 20, now: T0 });
      const same = await Promise.allSettled([1, 2, 3].map((r) => store.taskComplete({ id: made[0].id, agentId: a, result: r, now: T0 + 1 })));
      assert.equal(same.filter((r) => r.status === 'fulfilled').length, 1);
      for (const r of same) if (r.status === 'rejected') assert.equal((r.reason as FleetError).code, 'FLEETD_ERR_LEASE_LOST');
      const rest = await Promise.all(made.slice(1).map((t, i) => store.taskComplete({ id: t.id, agentId: a, result: { i }, now: T0 + 2 })));
      assert.deepEqual(rest.map((t) => [t.id, t.status, t.result]), made.slice(1).map((t, i) => [t.id, 'completed', { i }]));
      await assertCountersEqualRecount(store);
    });

    it('RescuesExpiredLeasesToTheQueue, then to dead once attempts are spent', async () => {
      const a = await agent(['e']);
      const [t] = await submit(task('e', { maxAttempts: 2 }));
      await store.taskClaim({ agentId: a, max: 1, now: T0 });
      assert.deepEqual(await store.taskNextDeadlines(), { leaseExpiresAt: T0 + 1_000, runAt: null });
      assert.deepEqual(await store.taskRescueExpiredLeases({ now: T0 + 999, limit: 10 }), []);
      const [back] = await store.taskRescueExpiredLeases({ now: T0 + 1_000, limit: 10 });
      assert.equal(back.from, 'leased');
      assert.equal(back.task.status, 'queued');
      assert.equal(back.task.attempts, 1);
      assert.equal((back.task.error as { code: string }).code, 'LEASE_EXPIRED');
      await store.taskClaim({ agentId: a, max: 1, now: T0 + 2_000 });
      const [dead] = await store.taskRescueExpiredLeases({ now: T0 + 3_000, limit: 10 });
      assert.equal(dead.task.id, t.id);
      assert.equal(dead.task.status, 'dead');
      assert.equal(dead.task.attempts, 2);
      assert.equal(dead.task.completedAt, T0 + 3_000);
    });

    it('RescuesInBoundedBatches', async () => {
      const a = await agent(['b'], 100);
      await submit(...Array.from({ length: 5 }, () => task('b')));
      await store.taskClaim({ agentId: a, max: 5, now: T0 });
      assert.equal((await store.taskRescueExpiredLeases({ now: T0 + 5_000, limit: 2 })).length, 2);
      assert.equal((await store.taskRescueExpiredLeases({ now: T0 + 5_000, limit: 10 })).length, 3);
    });

    it('FailsWithBackoffIntoScheduled, promotes when due, and buries non-retryable or exhausted failures', async () => {
      const a = await agent(['f']);
      const [t, fatal] = await submit(task('f', { maxAttempts: 2, backoffMs: 100 }), task('f', { payload: 'fatal' }));
      await store.taskClaim({ agentId: a, max: 1, now: T0 });
      const delays: [number, number][] = [];
      const failed = await store.taskFail({
        id: t.id, agentId: a, error: { why: 'flaky' }, retryable: true, now: T0 + 10,
        retryDelay: (attempt, backoffMs) => (delays.push([attempt, backoffMs]), backoffMs * 2 ** (attempt - 1)),
      });
      assert.deepEqual(delays, [[1, 100]]);
      assert.equal(failed.status, 'scheduled');
      assert.equal(failed.runAt, T0 + 110);
      assert.deepEqual(failed.error, { why: 'flaky' });
      assert.equal((await store.taskNextDeadlines()).runAt, T0 + 110);
      assert.deepEqual(await store.taskPromoteScheduled({ now: T0 + 109, limit: 10 }), []);
      const [promoted] = await store.taskPromoteScheduled({ now: T0 + 110, limit: 10 });
      assert.equal(promoted.from, 'scheduled');
      assert.equal(promoted.task.status, 'queued');
      const [again] = (await store.taskClaim({ agentId: a, max: 1, now: T0 + 200 })).tasks;
      assert.equal(again.id, t.id);
      assert.equal(again.attempts, 2);
      const exhausted = await store.taskFail({ id: t.id, agentId: a, error: 'again', retryable: true, now: T0 + 300, retryDelay: () => 0 });
      assert.equal(exhausted.status, 'dead');
      const [f2] = (await store.taskClaim({ agentId: a, max: 1, now: T0 + 400 })).tasks;
      assert.equal(f2.id, fatal.id);
      const buried = await store.taskFail({ id: fatal.id, agentId: a, error: 'no', retryable: false, now: T0 + 500, retryDelay: () => 0 });
      assert.equal(buried.status, 'dead');
      assert.equal(buried.attempts, 1);
    });

    it('RequeuesAtOnceWhenTheRetryDelayIsZero', async () => {
      const a = await agent(['z']);
      const [t] = await submit(task('z'));
      await store.taskClaim({ agentId: a, max: 1, now: T0 });
      const failed = await store.taskFail({ id: t.id, agentId: a, error: null, retryable: true, now: T0 + 1, retryDelay: () => 0 });
      assert.equal(failed.status, 'queued');
      assert.equal((await store.taskClaim({ agentId: a, max: 1, now: T0 + 2 })).tasks[0]?.id, t.id);
    });

    it('KeepsFutureTasksScheduledUntilRunAt', async () => {
      const a = await agent(['later']);
      const [t] = await submit(task('later', { runAt: T0 + 50 }));
      assert.equal(t.status, 'scheduled');
      assert.deepEqual((await store.taskClaim({ agentId: a, max: 1, now: T0 })).tasks, []);
      await store.taskPromoteScheduled({ now: T0 + 50, limit: 10 });
      assert.equal((await store.taskClaim({ agentId: a, max: 1, now: T0 + 50 })).tasks[0]?.id, t.id);
    });

    it('ReturnsTheFirstTaskForARepeatedIdempotencyKey, also within one batch', async () => {
      const [first] = await store.taskInsertMany({ tasks: [task('i', { idempotencyKey: 'k1' })], now: T0 });
      assert.equal(first.created, true);
      const again = await store.taskInsertMany({
        tasks: [task('i', { idempotencyKey: 'k1' }), task('i', { idempotencyKey: 'k2' }), task('i'), task('i', { idempotencyKey: 'k2' })],
        now: T0,
      });
      assert.deepEqual(again.map((r) => r.created), [false, true, true, false]);
      assert.equal(again[0].task.id, first.task.id);
      assert.equal(again[3].task.id, again[1].task.id);
      assert.ok(again[1].task.id < again[2].task.id, 'ids follow the batch order');
      assert.equal((await allTasks(store)).length, 3);
    });

    it('RejectsAKeyReusedForADifferentTask, and writes nothing of that batch', async () => {
      await store.taskInsertMany({ tasks: [task('i', { idempotencyKey: 'k' })], now: T0 });
      await rejectsWith(
        store.taskInsertMany({ tasks: [task('fresh'), task('i', { idempotencyKey: 'k', priority: 9 })], now: T0 }),
        'FLEETD_ERR_IDEMPOTENCY_CONFLICT',
      );
      await rejectsWith(
        store.taskInsertMany({ tasks: [task('i', { idempotencyKey: 'n' }), task('i', { idempotencyKey: 'n', payload: 2 })], now: T0 }),
        'FLEETD_ERR_IDEMPOTENCY_CONFLICT',
      );
      assert.deepEqual((await allTasks(store)).map((t) => t.idempotencyKey), ['k']);
      await assertCountersEqualRecount(store);
    });

    it('CreatesOneTaskForConcurrentSubmitsOfOneKey', async () => {
      const results = await Promise.all(
        Array.from({ length: 6 }, () => store.taskInsertMany({ tasks: [task('once', { idempotencyKey: 'same' })], now: T0 })),
      );
      assert.equal(results.filter(([r]) => r.created).length, 1);
      assert.equal(new Set(results.map(([r]) => r.task.id)).size, 1);
    });

    it('CancelsUnfinishedTasksOnly and retries dead or cancelled ones', async () => {
      const a = await agent(['cr']);
      const [queued, leased, done] = await submit(task('cr', { priority: 2 }), task('cr', { priority: 1 }), task('cr'));
      await store.taskClaim({ agentId: a, max: 2, now: T0 });
      assert.equal((await store.taskCancel({ id: queued.id, now: T0 })).status, 'cancelled');
      const [next] = (await store.taskClaim({ agentId: a, max: 1, now: T0 })).tasks;
      assert.equal(next.id, done.id);
      await store.taskComplete({ id: done.id, agentId: a, result: null, now: T0 });
      assert.equal((await store.taskCancel({ id: leased.id, now: T0 + 1 })).status, 'cancelled');
      await rejectsWith(store.taskComplete({ id: leased.id, agentId: a, result: 1, now: T0 }), 'FLEETD_ERR_LEASE_LOST');
      await rejectsWith(store.taskCancel({ id: done.id, now: T0 }), 'FLEETD_ERR_TASK_STATE');
      await rejectsWith(store.taskCancel({ id: 424_242, now: T0 }), 'FLEETD_ERR_NOT_FOUND');
      await rejectsWith(store.taskRetry({ id: done.id, now: T0 }), 'FLEETD_ERR_TASK_STATE');
      const retried = await store.taskRetry({ id: leased.id, now: T0 + 9 });
      assert.equal(retried.status, 'queued');
      assert.equal(retried.attempts, 0);
      assert.equal(retried.completedAt, null);
      assert.equal(retried.runAt, T0 + 9);
      await assertCountersEqualRecount(store);
    });

    it('TakesEveryResourceOrNone and reports the holders of a conflict', async () => {
      const a = await agent(['k']);
      const b = await agent(['k']);
      const first = await store.lockAcquire({ id: 'L1', agentId: a, resources: ['f1', 'f2'], ttlMs: 1_000, description: 'edit', now: T0 });
      assert.ok(first.acquired);
      const clash = await store.lockAcquire({ id: 'L2', agentId: b, resources: ['f3', 'f2'], ttlMs: 1_000, description: '', now: T0 });
      assert.deepEqual(clash, { acquired: false, conflicts: [{ resource: 'f2', lockId: 'L1', agentId: a, expiresAt: T0 + 1_000 }] });
      assert.equal(await store.lockGet({ id: 'L2' }), undefined);
      const f3 = await store.lockAcquire({ id: 'L3', agentId: b, resources: ['f3'], ttlMs: 1_000, description: '', now: T0 });
      assert.ok(f3.acquired, 'f3 was not taken by the refused lock');
      await rejectsWith(store.lockRelease({ id: 'L1', agentId: b }), 'FLEETD_ERR_FORBIDDEN');
      assert.equal((await store.lockRelease({ id: 'L1', agentId: a }))?.id, 'L1');
      assert.equal(await store.lockRelease({ id: 'L1' }), undefined);
      assert.ok((await store.lockAcquire({ id: 'L4', agentId: b, resources: ['f2'], ttlMs: 10, description: '', now: T0 })).acquired);
    });

    it('GrantsOneOfConcurrentLocksOnOneResource', async () => {
      const agents = await Promise.all([1, 2, 3, 4, 5].map(() => agent(['k'])));
      const results = await Promise.all(
        agents.map((a, i) => store.lockAcquire({ id: `C${i}`, agentId: a, resources: ['shared', `own-${i}`], ttlMs: 1_000, description: '', now: T0 })),
      );
      assert.equal(results.filter((r) => r.acquired).length, 1);
      assert.equal((await store.lockList({ limit: 10 })).items.length, 1);
    });

    it('ExpiresLocksByTTL, and a lapsed lock no longer blocks', async () => {
      const a = await agent(['k']);
      const b = await agent(['k']);
      await store.lockAcquire({ id: 'old', agentId: a, resources: ['r'], ttlMs: 100, description: '', now: T0 });
      await store.lockAcquire({ id: 'long', agentId: a, resources: ['s'], ttlMs: 500, description: '', now: T0 });
      assert.equal(await store.lockNextExpiry(), T0 + 100);
      const taken = await store.lockAcquire({ id: 'new', agentId: b, resources: ['r'], ttlMs: 100, description: '', now: T0 + 100 });
      assert.ok(taken.acquired, 'a lock past its TTL is replaced');
      assert.equal(await store.lockGet({ id: 'old' }), undefined);
      const expired = await store.lockExpire({ now: T0 + 500, limit: 10 });
      assert.deepEqual(expired.map((l) => l.id).sort(), ['long', 'new']);
      assert.equal(await store.lockNextExpiry(), null);
    });

    it('MarksSilentAgentsStale, then takes them offline releasing their tasks and locks', async () => {
      const a = await agent(['s'], 10, T0);
      const alive = await agent(['s'], 10, T0);
      const [t1, t2] = await submit(task('s'), task('s', { maxAttempts: 1 }));
      await store.taskClaim({ agentId: a, max: 2, now: T0 });
      await store.lockAcquire({ id: 'La', agentId: a, resources: ['x'], ttlMs: 60_000, description: '', now: T0 });
      await store.agentHeartbeat({ id: alive, now: T0 + 5_000 });
      assert.deepEqual(await store.agentMarkStale({ staleBefore: T0 + 1_000, now: T0 + 5_000, limit: 10 }), [a]);
      assert.equal(await store.agentOldestHeartbeat({ status: 'stale' }), T0);
      assert.equal(await store.agentOldestHeartbeat({ status: 'online' }), T0 + 5_000);
      const [released] = await store.agentReapOffline({ offlineBefore: T0 + 2_000, now: T0 + 6_000, limit: 10 });
      assert.equal(released.agent.id, a);
      assert.equal(released.agent.status, 'offline');
      assert.deepEqual(released.tasks.map((t) => [t.task.id, t.from, t.task.status]), [[t1.id, 'leased', 'queued'], [t2.id, 'leased', 'dead']]);
      assert.equal((released.tasks[0].task.error as { code: string }).code, 'AGENT_OFFLINE');
      assert.deepEqual(released.locks.map((l) => l.id), ['La']);
      assert.deepEqual(await store.agentReapOffline({ offlineBefore: T0 + 2_000, now: T0 + 6_000, limit: 10 }), []);
      const back = await store.agentHeartbeat({ id: a, now: T0 + 7_000 });
      assert.equal(back?.previousStatus, 'offline');
      assert.equal(back?.agent.status, 'online');
      assert.equal(await store.agentHeartbeat({ id: 'ghost', now: T0 }), undefined);
      await assertCountersEqualRecount(store);
    });

    it('ReleasesOneAgentAtOnce: offline, its tasks back, its locks gone', async () => {
      const a = await agent(['g']);
      const [t] = await submit(task('g'));
      await store.taskClaim({ agentId: a, max: 1, now: T0 });
      await store.lockAcquire({ id: 'Lg', agentId: a, resources: ['g1'], ttlMs: 1_000, description: '', now: T0 });
      const released = await store.agentRelease({ id: a, now: T0 + 1 });
      assert.equal(released?.agent.status, 'offline');
      assert.deepEqual(released?.tasks.map((x) => [x.task.id, x.task.status]), [[t.id, 'queued']]);
      assert.deepEqual(released?.locks.map((l) => l.id), ['Lg']);
      assert.equal(await store.agentRelease({ id: 'nobody', now: T0 }), undefined);
      await assertCountersEqualRecount(store);
    });

    it('DeletesAnAgentReleasingWhatItHeld', async () => {
      const a = await agent(['d']);
      const [t] = await submit(task('d'));
      await store.taskClaim({ agentId: a, max: 1, now: T0 });
      await store.lockAcquire({ id: 'Ld', agentId: a, resources: ['y'], ttlMs: 1_000, description: '', now: T0 });
      const released = await store.agentDelete({ id: a, now: T0 + 1 });
      assert.deepEqual(released?.tasks.map((x) => [x.task.id, x.task.status]), [[t.id, 'queued']]);
      assert.deepEqual(released?.locks.map((l) => l.id), ['Ld']);
      assert.equal(await store.agentGet({ id: a }), undefined);
      assert.equal(await store.agentDelete({ id: a, now: T0 }), undefined);
      await assertCountersEqualRecount(store);
    });

    it('StoresAgentsWithTheirTokenHashAndListsThemByCapabilityAndStatus', async () => {
      const ids = [];
      for (let i = 0; i < 7; i++) ids.push(await agent(i % 2 ? ['odd', 'all'] : ['all']));
      const got = await store.agentGet({ id: ids[0] });
      assert.deepEqual(got?.labels, { role: 'test' });
      assert.deepEqual(got?.capabilities, ['all']);
      assert.equal(await store.agentIdByTokenHash({ hash: `hash-${ids[0]}` }), ids[0]);
      assert.equal(await store.agentIdByTokenHash({ hash: 'hash-nobody' }), undefined);
      const odd = await store.agentList({ capability: 'odd', limit: 2 });
      assert.deepEqual(odd.items.map((a) => a.id), [ids[1], ids[3]]);
      const odd2 = await store.agentList({ capability: 'odd', limit: 2, cursor: odd.nextCursor! });
      assert.deepEqual(odd2.items.map((a) => a.id), [ids[5]]);
      assert.equal(odd2.nextCursor, null);
      await store.agentMarkStale({ staleBefore: T0 + 1, now: T0 + 1, limit: 3 });
      assert.equal((await store.agentList({ status: 'stale', limit: 10 })).items.length, 3);
      await assertCountersEqualRecount(store);
    });

    it('StoresApiKeysByHashCreatesTheFirstOnlyOnceAndRevokesThem', async () => {
      const first = await store.apiKeyInsert({ id: 'k1', name: 'first', scope: 'admin', hash: 'h1', now: T0, onlyIfNone: true });
      assert.deepEqual(first, { id: 'k1', name: 'first', scope: 'admin', createdAt: T0, revokedAt: null });
      // A second "first" key is refused once any key exists; an ordinary one is not.
      assert.equal(await store.apiKeyInsert({ id: 'k2', name: 'again', scope: 'admin', hash: 'h2', now: T0, onlyIfNone: true }), undefined);
      await store.apiKeyInsert({ id: 'k3', name: 'reader', scope: 'read', hash: 'h3', now: T0 + 1 });
      assert.equal((await store.apiKeyByHash({ hash: 'h3' }))?.scope, 'read');
      assert.equal(await store.apiKeyByHash({ hash: 'h2' }), undefined);
      assert.equal((await store.apiKeyRevoke({ id: 'k3', now: T0 + 5 }))?.revokedAt, T0 + 5);
      assert.equal((await store.apiKeyRevoke({ id: 'k3', now: T0 + 9 }))?.revokedAt, T0 + 5);
      assert.equal(await store.apiKeyByHash({ hash: 'h3' }), undefined);
      assert.equal(await store.apiKeyRevoke({ id: 'nope', now: T0 }), undefined);
      assert.deepEqual((await store.apiKeyList()).map((k) => [k.id, k.revokedAt]), [['k1', null], ['k3', T0 + 5]]);
    });

    it('PagesTasksNewestFirstOrOldestFirst with filters, and refuses foreign cursors', async () => {
      const made = await submit(...Array.from({ length: 12 }, (_, i) => task(i % 3 ? 'p' : 'q', { payload: i })));
      const seen: number[] = [];
      let cursor: string | undefined;
      do {
        const page = await store.taskList({ type: 'p', limit: 3, cursor });
        seen.push(...page.items.map((t) => t.id));
        cursor = page.nextCursor ?? undefined;
      } while (cursor);
      assert.deepEqual(seen, made.filter((t) => t.type === 'p').map((t) => t.id).reverse());
      const asc = await store.taskList({ status: 'queued', limit: 100, order: 'asc' });
      assert.deepEqual(asc.items.map((t) => t.id), made.map((t) => t.id));
      assert.deepEqual(asc.items[4].payload, 4);
      await rejectsWith(store.taskList({ limit: 3, cursor: 'not a cursor!' }), 'FLEETD_ERR_VALIDATION');
    });

    it('DeletesFinishedTasksOlderThanRetention, in batches', async () => {
      const a = await agent(['old'], 100);
      const made = await submit(...Array.from({ length: 4 }, () => task('old')));
      await store.taskClaim({ agentId: a, max: 3, now: T0 });
      for (const t of made.slice(0, 3)) await store.taskComplete({ id: t.id, agentId: a, result: null, now: T0 + 10 });
      assert.equal(await store.taskDeleteFinished({ before: T0 + 10, limit: 10 }), 0);
      assert.equal(await store.taskDeleteFinished({ before: T0 + 11, limit: 2 }), 2);
      assert.equal(await store.taskDeleteFinished({ before: T0 + 11, limit: 10 }), 1);
      assert.deepEqual((await allTasks(store)).map((t) => t.id), [made[3].id]);
      await assertCountersEqualRecount(store);
    });

    it('KeepsCountersEqualToARecount through a mixed, concurrent workload', async () => {
      const agents = await Promise.all([1, 2, 3].map(() => agent(['m1', 'm2'], 50)));
      await submit(...Array.from({ length: 40 }, (_, i) => task(i % 2 ? 'm1' : 'm2', { priority: i % 3, maxAttempts: 2 })));
      await submit(task('m1', { runAt: T0 + 100 }));
      const claims = await Promise.all(agents.map((a) => store.taskClaim({ agentId: a, max: 12, now: T0 })));
      const statusOf = (i: number): TaskStatus => (['completed', 'queued', 'dead', 'cancelled'] as const)[i % 4];
      await Promise.all(
        claims.flatMap((c, ai) =>
          c.tasks.map((t, i) => {
            const s = statusOf(i + ai);
            if (s === 'completed') return store.taskComplete({ id: t.id, agentId: agents[ai], result: i, now: T0 + 1 });
            if (s === 'cancelled') return store.taskCancel({ id: t.id, now: T0 + 1 });
            return store.taskFail({ id: t.id, agentId: agents[ai], error: i, retryable: s === 'queued', now: T0 + 1, retryDelay: () => 0 });
          }),
        ),
      );
      await store.taskClaim({ agentId: agents[0], max: 5, now: T0 + 2 });
      await store.taskRescueExpiredLeases({ now: T0 + 10_000, limit: 100 });
      await store.taskPromoteScheduled({ now: T0 + 10_000, limit: 100 });
      await store.agentMarkStale({ staleBefore: T0 + 1, now: T0 + 10_000, limit: 1 });
      await assertCountersEqualRecount(store);
      const byStatus = Object.fromEntries(
        (['scheduled', 'queued', 'leased', 'completed', 'dead', 'cancelled'] as const).map((s) => [s, 0]),
      ) as Record<TaskStatus, number>;
      for (const c of await store.taskCounts()) byStatus[c.status] += c.count;
      assert.equal(Object.values(byStatus).reduce((x, y) => x + y, 0), 41);
      assert.equal(byStatus.scheduled + byStatus.leased, 0);
    });
  });
}
