import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { repeatCheck } from '../../src/core/rules/idempotency.js';
import { planClaim } from '../../src/core/rules/admission.js';
import type { LinkCheck } from '../../src/store/store.js';
import { CANCELLABLE, RETRYABLE } from '../../src/core/rules/tasks.js';
import { FleetError } from '../../src/domain/errors.js';
import type { Task, TaskStatus } from '../../src/domain/types.js';
import type { TaskInsertParams } from '../../src/store/store.js';
import { T0, allTasks, assertCountersEqualRecount, eachTest, refused, rules, task, written, type DriverFactory, payloadOf } from './harness.js';

async function rejectsWith(promise: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof FleetError, `expected a FleetError, got ${err}`);
    assert.equal(err.code, code);
    return true;
  });
}

/** The queue: insert, claim, complete, fail, extend, cancel, retry, rescue, promote, delete, list, count. */
export function exerciseTasks(factory: DriverFactory): void {
  describe('tasks', () => {
    const h = eachTest(factory);
    const insert = (tasks: TaskInsertParams[]) => h.store.taskInsertMany({ tasks, now: T0, onRepeat: repeatCheck('task', tasks) });

    it('ClaimsHighestPriorityFirstThenOldest across requirement sets', async () => {
      const a = await h.agent(['x', 'y']);
      const made = await h.submit(
        task('x', { payload: 'x-low' }),
        task('y', { payload: 'y-high', priority: 5 }),
        task('x', { payload: 'x-high', priority: 5 }),
        task('both', { payload: 'both-mid', priority: 2, requires: ['x', 'y'] }),
        task('y', { payload: 'y-low' }),
      );
      assert.deepEqual(made.map((t) => t.status), ['queued', 'queued', 'queued', 'queued', 'queued']);
      const first = await h.store.taskClaim({ agentId: a, max: 3, now: T0 });
      assert.deepEqual(first.tasks.map((t) => payloadOf(t)), ['y-high', 'x-high', 'both-mid']);
      assert.equal(first.room, 7, 'maxConcurrency 10 less the 3 it now holds');
      const rest = await h.store.taskClaim({ agentId: a, max: 10, now: T0 });
      assert.deepEqual(rest.tasks.map((t) => payloadOf(t)), ['x-low', 'y-low']);
      for (const t of [...first.tasks, ...rest.tasks]) {
        assert.equal(t.status, 'leased');
        assert.equal(t.agentId, a);
        assert.equal(t.attempts, 1);
        assert.equal(t.leaseExpiresAt, T0 + 1_000);
      }
    });


    it('TakesExactlyItsRoomFromALargeBacklog, best first, across requirement sets', async () => {
      const a = await h.agent(['x', 'y'], 200);
      // 300 tasks in two requirement sets, priorities 0–9 interleaved: a claim's statements fetch
      // up to a power of two of rows per set, and the claim must still take exactly its room.
      await h.submit(...Array.from({ length: 300 }, (_, i) => task(i % 2 === 0 ? 'x' : 'y', { payload: i, priority: (i * 7) % 10 })));
      const expected = Array.from({ length: 300 }, (_, i) => ({ i, priority: (i * 7) % 10 })).sort((p, q) => q.priority - p.priority || p.i - q.i);
      const first = await h.store.taskClaim({ agentId: a, max: 70, now: T0 });
      assert.deepEqual(first.tasks.map((t) => payloadOf(t)), expected.slice(0, 70).map((e) => e.i));
      const second = await h.store.taskClaim({ agentId: a, max: 130, now: T0 });
      assert.deepEqual(second.tasks.map((t) => payloadOf(t)), expected.slice(70, 200).map((e) => e.i));
      assert.equal(second.room, 0, 'maxConcurrency 200, all of it leased');
      assert.equal((await allTasks(h.store)).filter((t) => t.status === 'queued').length, 100);
    });
    it('HandsOutOnlyTasksWhoseRequirementsTheAgentHasAll', async () => {
      const crawler = await h.agent(['crawl']);
      const gpu = await h.agent(['crawl', 'gpu']);
      const [render, anyone] = await h.submit(task('render', { requires: ['gpu', 'crawl'] }), task('misc', { requires: [] }));
      assert.deepEqual((await h.store.taskClaim({ agentId: crawler, max: 5, now: T0 })).tasks.map((t) => t.id), [anyone.id]);
      assert.deepEqual((await h.store.taskClaim({ agentId: gpu, max: 5, now: T0 })).tasks.map((t) => t.id), [render.id]);
      assert.deepEqual(render.requires, ['crawl', 'gpu']);
    });

    it('NeverExceedsMaxConcurrency even with concurrent claims by one agent', async () => {
      const a = await h.agent(['c'], 3);
      await h.submit(...Array.from({ length: 10 }, () => task('c')));
      const claims = await Promise.all(Array.from({ length: 6 }, () => h.store.taskClaim({ agentId: a, max: 2, now: T0 })));
      assert.equal(claims.flatMap((c) => c.tasks).length, 3);
      const full = await h.store.taskClaim({ agentId: a, max: 2, now: T0 });
      assert.deepEqual([full.tasks, full.room], [[], 0]);
      assert.equal((await h.store.taskList({ agentId: a, status: 'leased', limit: 100 })).items.length, 3);
    });

    it('GivesEachTaskToOneAgentUnderConcurrentClaims', async () => {
      const agents = await Promise.all(Array.from({ length: 8 }, () => h.agent(['race'], 100)));
      const made = await h.submit(...Array.from({ length: 60 }, () => task('race')));
      const claims = await Promise.all(agents.flatMap((a) => [1, 2, 3].map(() => h.store.taskClaim({ agentId: a, max: 4, now: T0 }))));
      const ids = claims.flatMap((c) => c.tasks.map((t) => t.id));
      assert.equal(new Set(ids).size, ids.length, 'no task handed out twice');
      const again = await Promise.all(agents.map((a) => h.store.taskClaim({ agentId: a, max: 100, now: T0 })));
      const all = [...ids, ...again.flatMap((c) => c.tasks.map((t) => t.id))].sort((x, y) => x - y);
      assert.deepEqual(all, made.map((t) => t.id));
    });

    it('CountsAClaimAsAHeartbeatAndReportsThePreviousStatus', async () => {
      const a = await h.agent(['h']);
      assert.deepEqual(await h.store.agentMarkStale({ staleBefore: T0 + 1, now: T0 + 1, limit: 10 }), [a]);
      const claim = await h.store.taskClaim({ agentId: a, max: 1, now: T0 + 5 });
      assert.equal(claim.previousStatus, 'stale');
      assert.equal(claim.agent.status, 'online');
      assert.equal(claim.agent.lastHeartbeatAt, T0 + 5);
      await rejectsWith(h.store.taskClaim({ agentId: 'nobody', max: 1, now: T0 }), 'FLEETD_ERR_NOT_FOUND');
    });

    it('LetsOnlyTheLeaseHolderCompleteFailOrExtend, reports the holder when refused, and extends from now', async () => {
      const a = await h.agent(['l']);
      const b = await h.agent(['l']);
      const [t] = await h.submit(task('l'));
      await h.store.taskClaim({ agentId: a, max: 1, now: T0 });
      const held = { status: 'leased' as const, agentId: a };
      refused(await h.store.taskComplete({ id: t.id, agentId: b, result: 1, now: T0 }), held);
      refused(await h.store.taskExtendLease({ id: t.id, agentId: b, now: T0 }), held);
      refused(await h.store.taskFail({ id: t.id, agentId: b, now: T0, endLease: rules.failed(T0) }), held);
      refused(await h.store.taskComplete({ id: 999_999, agentId: a, result: 1, now: T0 }), undefined);
      const extended = written(await h.store.taskExtendLease({ id: t.id, agentId: a, leaseMs: 5_000, now: T0 + 500 }));
      assert.equal(extended.leaseExpiresAt, T0 + 5_500);
      const byDefault = written(await h.store.taskExtendLease({ id: t.id, agentId: a, now: T0 + 600 }));
      assert.equal(byDefault.leaseExpiresAt, T0 + 1_600);
      const done = written(await h.store.taskComplete({ id: t.id, agentId: a, result: { ok: [1, 2] }, now: T0 + 700 }));
      assert.equal(done.status, 'completed');
      assert.deepEqual(done.result, { ok: [1, 2] });
      assert.equal(done.completedAt, T0 + 700);
      assert.equal(done.leaseExpiresAt, null);
      refused(await h.store.taskComplete({ id: t.id, agentId: a, result: 1, now: T0 }), { status: 'completed' });
    });

    it('AcknowledgesOneOfConcurrentCompletionsOfOneTask, and each of many different ones', async () => {
      const a = await h.agent(['cc'], 50);
      const made = await h.submit(...Array.from({ length: 20 }, () => task('cc')));
      await h.store.taskClaim({ agentId: a, max: 20, now: T0 });
      const same = await Promise.all([1, 2, 3].map((r) => h.store.taskComplete({ id: made[0].id, agentId: a, result: r, now: T0 + 1 })));
      assert.equal(same.filter((w) => w.task).length, 1);
      for (const w of same) if (!w.task) assert.equal(w.current?.status, 'completed');
      const rest = await Promise.all(made.slice(1).map((t, i) => h.store.taskComplete({ id: t.id, agentId: a, result: { i }, now: T0 + 2 })));
      assert.deepEqual(rest.map((w) => written(w)).map((t) => [t.id, t.status, t.result]), made.slice(1).map((t, i) => [t.id, 'completed', { i }]));
      await assertCountersEqualRecount(h.store);
    });

    it('WritesATickOfCompletionsFailuresAndExtensionsTogether, each answered on its own and each refusal changing nothing', async () => {
      const a = await h.agent(['tick'], 50);
      const b = await h.agent(['tick'], 50);
      const made = await h.submit(...Array.from({ length: 12 }, () => task('tick', { maxAttempts: 1 })));
      await h.store.taskClaim({ agentId: a, max: 10, now: T0 });
      await h.store.taskClaim({ agentId: b, max: 2, now: T0 });
      const [c1, c2, f1, f2, e1, e2, lost1, lost2, lost3, twice] = made;
      const [ofB] = made.slice(10);
      const now = T0 + 10;
      // One turn of the event loop: what one batch of items hands the store.
      const writes = await Promise.all([
        h.store.taskComplete({ id: c1.id, agentId: a, result: 'c1', now }),
        h.store.taskComplete({ id: c2.id, agentId: a, result: 'c2', now }),
        h.store.taskFail({ id: f1.id, agentId: a, now, endLease: rules.failed(now, true, 'f1') }),
        h.store.taskFail({ id: f2.id, agentId: a, now, endLease: rules.failed(now, false, 'f2') }),
        h.store.taskExtendLease({ id: e1.id, agentId: a, leaseMs: 9_000, now }),
        h.store.taskExtendLease({ id: e2.id, agentId: a, now }),
        h.store.taskComplete({ id: ofB.id, agentId: a, result: 'not mine', now }),
        h.store.taskFail({ id: ofB.id, agentId: a, now, endLease: rules.failed(now) }),
        h.store.taskExtendLease({ id: ofB.id, agentId: a, now }),
        h.store.taskComplete({ id: 999_999, agentId: a, result: 'gone', now }),
        h.store.taskComplete({ id: twice.id, agentId: a, result: 'first', now }),
        h.store.taskFail({ id: twice.id, agentId: a, now, endLease: rules.failed(now) }),
      ]);
      assert.deepEqual(
        writes.slice(0, 6).map((w) => [written(w).id, written(w).status]),
        [[c1.id, 'completed'], [c2.id, 'completed'], [f1.id, 'dead'], [f2.id, 'dead'], [e1.id, 'leased'], [e2.id, 'leased']],
      );
      assert.deepEqual(written(writes[0]).result, 'c1');
      assert.deepEqual(written(writes[2]).error, 'f1');
      assert.equal(written(writes[4]).leaseExpiresAt, now + 9_000);
      assert.equal(written(writes[5]).leaseExpiresAt, now + 1_000);
      for (const w of writes.slice(6, 9)) refused(w, { status: 'leased', agentId: b });
      refused(writes[9], undefined);
      // Two writes to one task in one tick: one of them takes effect, the other is refused.
      assert.equal(writes.slice(10).filter((w) => w.task).length, 1);
      const after = (await allTasks(h.store)).filter((t) => [ofB.id, lost1.id, lost2.id, lost3.id].includes(t.id));
      assert.deepEqual(after.map((t) => [t.status, t.result, t.error]), Array.from({ length: 4 }, () => ['leased', null, null]));
      await assertCountersEqualRecount(h.store);
    });

    it('RescuesExpiredLeasesToTheQueue, then to dead once attempts are spent', async () => {
      const a = await h.agent(['e']);
      const [t] = await h.submit(task('e', { maxAttempts: 2 }));
      await h.store.taskClaim({ agentId: a, max: 1, now: T0 });
      assert.deepEqual(await h.store.taskNextDeadlines(), { leaseExpiresAt: T0 + 1_000, runAt: null });
      assert.deepEqual(await h.store.taskRescueExpiredLeases({ now: T0 + 999, limit: 10, endLease: rules.expired(T0 + 999) }), []);
      const [back] = await h.store.taskRescueExpiredLeases({ now: T0 + 1_000, limit: 10, endLease: rules.expired(T0 + 1_000) });
      assert.equal(back.from, 'leased');
      assert.equal(back.task.status, 'queued');
      assert.equal(back.task.attempts, 1);
      assert.equal((back.task.error as { code: string }).code, 'FLEETD_ERR_LEASE_EXPIRED');
      await h.store.taskClaim({ agentId: a, max: 1, now: T0 + 2_000 });
      const [dead] = await h.store.taskRescueExpiredLeases({ now: T0 + 3_000, limit: 10, endLease: rules.expired(T0 + 3_000) });
      assert.equal(dead.task.id, t.id);
      assert.equal(dead.task.status, 'dead');
      assert.equal(dead.task.attempts, 2);
      assert.equal(dead.task.completedAt, T0 + 3_000);
    });

    it('RescuesInBoundedBatches', async () => {
      const a = await h.agent(['b'], 100);
      await h.submit(...Array.from({ length: 5 }, () => task('b')));
      await h.store.taskClaim({ agentId: a, max: 5, now: T0 });
      assert.equal((await h.store.taskRescueExpiredLeases({ now: T0 + 5_000, limit: 2, endLease: rules.expired(T0 + 5_000) })).length, 2);
      assert.equal((await h.store.taskRescueExpiredLeases({ now: T0 + 5_000, limit: 10, endLease: rules.expired(T0 + 5_000) })).length, 3);
    });

    it('PersistsTheEndItIsGiven, whatever the attempts left, and asks with the lease as it stands', async () => {
      const a = await h.agent(['p'], 10);
      const [t, u] = await h.submit(task('p', { maxAttempts: 5, backoffMs: 7 }), task('p', { maxAttempts: 5 }));
      await h.store.taskClaim({ agentId: a, max: 2, now: T0 });
      const asked: unknown[] = [];
      const dead = written(
        await h.store.taskFail({
          id: t.id,
          agentId: a,
          now: T0 + 1,
          endLease: (lease) => (asked.push(lease), { status: 'dead', error: { told: 'dead' } }),
        }),
      );
      assert.deepEqual(asked, [{ id: t.id, agentId: a, attempts: 1, maxAttempts: 5, backoffMs: 7, claimedAt: T0, executionTimeoutMs: null }]);
      assert.deepEqual([dead.status, dead.completedAt, dead.error, dead.leaseExpiresAt], ['dead', T0 + 1, { told: 'dead' }, null]);
      const [later] = await h.store.taskRescueExpiredLeases({
        now: T0 + 5_000,
        limit: 10,
        endLease: () => ({ status: 'scheduled', runAt: T0 + 9_000, error: 'told' }),
      });
      assert.deepEqual([later.task.id, later.task.status, later.task.runAt, later.task.completedAt], [u.id, 'scheduled', T0 + 9_000, null]);
      assert.equal((await h.store.taskNextDeadlines()).runAt, T0 + 9_000);
      await assertCountersEqualRecount(h.store);
    });

    it('FailsWithBackoffIntoScheduled, promotes when due, and buries non-retryable or exhausted failures', async () => {
      const a = await h.agent(['f']);
      const [t, fatal] = await h.submit(task('f', { maxAttempts: 2, backoffMs: 100 }), task('f', { payload: 'fatal' }));
      await h.store.taskClaim({ agentId: a, max: 1, now: T0 });
      const failed = written(
        await h.store.taskFail({ id: t.id, agentId: a, now: T0 + 10, endLease: () => ({ status: 'scheduled', runAt: T0 + 110, error: { why: 'flaky' } }) }),
      );
      assert.equal(failed.status, 'scheduled');
      assert.equal(failed.runAt, T0 + 110);
      assert.deepEqual(failed.error, { why: 'flaky' });
      assert.equal((await h.store.taskNextDeadlines()).runAt, T0 + 110);
      assert.deepEqual(await h.store.taskPromoteScheduled({ now: T0 + 109, limit: 10 }), []);
      const [promoted] = await h.store.taskPromoteScheduled({ now: T0 + 110, limit: 10 });
      assert.equal(promoted.from, 'scheduled');
      assert.equal(promoted.task.status, 'queued');
      const [again] = (await h.store.taskClaim({ agentId: a, max: 1, now: T0 + 200 })).tasks;
      assert.equal(again.id, t.id);
      assert.equal(again.attempts, 2);
      const exhausted = written(await h.store.taskFail({ id: t.id, agentId: a, now: T0 + 300, endLease: rules.failed(T0 + 300, true, 'again') }));
      assert.equal(exhausted.status, 'dead');
      const [f2] = (await h.store.taskClaim({ agentId: a, max: 1, now: T0 + 400 })).tasks;
      assert.equal(f2.id, fatal.id);
      const buried = written(await h.store.taskFail({ id: fatal.id, agentId: a, now: T0 + 500, endLease: rules.failed(T0 + 500, false, 'no') }));
      assert.equal(buried.status, 'dead');
      assert.equal(buried.attempts, 1);
    });

    it('RequeuesAtOnceWhenTheRetryTimeIsNow', async () => {
      const a = await h.agent(['z']);
      const [t] = await h.submit(task('z'));
      await h.store.taskClaim({ agentId: a, max: 1, now: T0 });
      const failed = written(await h.store.taskFail({ id: t.id, agentId: a, now: T0 + 1, endLease: () => ({ status: 'queued', runAt: T0 + 1, error: null }) }));
      assert.equal(failed.status, 'queued');
      assert.equal((await h.store.taskClaim({ agentId: a, max: 1, now: T0 + 2 })).tasks[0]?.id, t.id);
    });

    it('KeepsFutureTasksScheduledUntilRunAt', async () => {
      const a = await h.agent(['later']);
      const [t] = await h.submit(task('later', { runAt: T0 + 50 }));
      assert.equal(t.status, 'scheduled');
      assert.deepEqual((await h.store.taskClaim({ agentId: a, max: 1, now: T0 })).tasks, []);
      await h.store.taskPromoteScheduled({ now: T0 + 50, limit: 10 });
      assert.equal((await h.store.taskClaim({ agentId: a, max: 1, now: T0 + 50 })).tasks[0]?.id, t.id);
    });

    it('ReturnsTheFirstTaskForARepeatedIdempotencyKey, also within one batch', async () => {
      const [first] = await insert([task('i', { idempotencyKey: 'k1' })]);
      assert.equal(first.created, true);
      const again = await insert([task('i', { idempotencyKey: 'k1' }), task('i', { idempotencyKey: 'k2' }), task('i'), task('i', { idempotencyKey: 'k2' })]);
      assert.deepEqual(again.map((r) => r.created), [false, true, true, false]);
      assert.equal(again[0].task.id, first.task.id);
      assert.equal(again[3].task.id, again[1].task.id);
      assert.ok(again[1].task.id < again[2].task.id, 'ids follow the batch order');
      assert.equal((await allTasks(h.store)).length, 3);
    });

    it('AsksAboutEveryRepeatedKeyWithTheExistingTask, and writes nothing of a batch it refuses', async () => {
      const [kept] = await insert([task('i', { idempotencyKey: 'k' })]);
      const repeats: unknown[] = [];
      const batch = [task('fresh'), task('i', { idempotencyKey: 'k', priority: 9 })];
      await rejectsWith(
        h.store.taskInsertMany({
          tasks: batch,
          now: T0,
          onRepeat: (r) => {
            repeats.push(r);
            throw new FleetError('FLEETD_ERR_IDEMPOTENCY_CONFLICT', 'refused');
          },
        }),
        'FLEETD_ERR_IDEMPOTENCY_CONFLICT',
      );
      assert.deepEqual(repeats, [{ index: 1, existing: { id: kept.task.id, requestHash: task('i', { idempotencyKey: 'k' }).requestHash } }]);
      await rejectsWith(insert([task('i', { idempotencyKey: 'n' }), task('i', { idempotencyKey: 'n', payload: 2 })]), 'FLEETD_ERR_IDEMPOTENCY_CONFLICT');
      assert.deepEqual((await allTasks(h.store)).map((t) => t.idempotencyKey), ['k']);
      await assertCountersEqualRecount(h.store);
    });

    it('ClaimsOnlyTasksOfTheAgentsOwnNamespace, in the plain order and under a plan alike', async () => {
      const plain = await h.agent(['n']);
      const teamA = await h.agent(['n'], 10, T0, 'team-a');
      const teamB = await h.agent(['n'], 10, T0, 'team-b');
      const [d, dAny, a, aAny, b] = await h.submit(
        task('n', { concurrencyKey: 'tenant' }),
        task('any', { requires: [] }),
        task('n', { namespace: 'team-a', priority: 1 }),
        task('any', { namespace: 'team-a', requires: [] }),
        task('n', { namespace: 'team-b', concurrencyKey: 'tenant' }),
      );
      assert.deepEqual([d, a, b].map((t) => t.namespace), ['default', 'team-a', 'team-b']);
      assert.deepEqual(a.requires, ['n'], "the namespace's requirement stays out of the task's own");
      assert.deepEqual(aAny.requires, []);
      const claimed = async (agentId: string) => (await h.store.taskClaim({ agentId, max: 10, now: T0, plan: planClaim })).tasks.map((t) => t.id).sort((x, y) => x - y);
      // Keyed tasks queued: these claims go by core's plan, whose groups must leave default's out.
      assert.deepEqual(await claimed(teamB), [b.id]);
      assert.deepEqual(await claimed(teamA), [a.id, aAny.id]);
      assert.deepEqual(await claimed(plain), [d.id, dAny.id]);
      assert.deepEqual(await claimed(teamA), []);
      await assertCountersEqualRecount(h.store);
    });

    it('KeepsIdempotencyKeysPerNamespace', async () => {
      const [d, a] = await insert([task('i', { idempotencyKey: 'k' }), task('i', { idempotencyKey: 'k', namespace: 'team-a' })]);
      assert.deepEqual([d.created, a.created], [true, true]);
      assert.notEqual(d.task.id, a.task.id);
      assert.deepEqual([d.task.idempotencyKey, a.task.idempotencyKey], ['k', 'k']);
      const again = await insert([task('i', { idempotencyKey: 'k', namespace: 'team-a' }), task('i', { idempotencyKey: 'k', namespace: 'team-b' })]);
      assert.deepEqual(again.map((r) => r.created), [false, true]);
      assert.equal(again[0].task.id, a.task.id);
      assert.equal(again[0].task.namespace, 'team-a');
      assert.equal((await allTasks(h.store)).length, 3);
    });

    it('FindsParentsAndDependenciesInTheNewTasksOwnNamespaceOnly', async () => {
      const [d, a] = await h.submit(task('p'), task('p', { namespace: 'team-a' }));
      const seen: Parameters<LinkCheck>[0][] = [];
      const onLinks: LinkCheck = (found) => {
        seen.push(found);
        return { status: 'queued', pending: 0 };
      };
      const links = { parentId: d.id, dependsOn: [d.id, a.id], onDependencyFailure: 'cancel' as const };
      const tasks = [task('c', { namespace: 'team-a', links: { ...links, parentId: d.id } }), task('c', { links: { ...links, parentId: a.id } })];
      await h.store.taskInsertMany({ tasks, now: T0, onRepeat: repeatCheck('task', tasks), onLinks });
      assert.deepEqual(
        seen.sort((x, y) => x.index - y.index),
        [
          { index: 0, parentFound: false, dependencies: [{ id: a.id, status: 'queued' }] },
          { index: 1, parentFound: false, dependencies: [{ id: d.id, status: 'queued' }] },
        ],
      );
    });

    it('ListsCountsAndActsInBulkWithinTheNamespacesItIsGiven', async () => {
      await h.submit(task('l'), task('l'), task('l', { namespace: 'team-a' }), task('l', { namespace: 'team-b', priority: 3 }));
      const listed = async (namespaces?: readonly string[]) => (await h.store.taskList({ limit: 10, namespaces })).items.map((t) => t.namespace).sort();
      assert.deepEqual(await listed(), ['default', 'default', 'team-a', 'team-b']);
      assert.deepEqual(await listed(['team-a']), ['team-a']);
      assert.deepEqual(await listed(['team-a', 'team-b']), ['team-a', 'team-b']);
      assert.deepEqual(await listed(['nobody']), []);
      const counted = async (namespaces?: readonly string[]) =>
        (await h.store.taskCounts({ namespaces })).map((c) => `${c.type}/${c.priority}/${c.status}:${Number(c.count)}`).sort();
      assert.deepEqual(await counted(), ['l/0/queued:3', 'l/3/queued:1']);
      assert.deepEqual(await counted(['default']), ['l/0/queued:2']);
      assert.deepEqual(await counted(['team-a', 'team-b']), ['l/0/queued:1', 'l/3/queued:1']);
      assert.deepEqual(await counted(['nobody']), []);
      assert.deepEqual(await h.store.taskBulkCount({ filter: { namespaces: ['team-b'] }, from: CANCELLABLE }), { matched: 1, eligible: 1 });
      const { tasks } = await h.store.taskBulkApply({ action: 'cancel', filter: { namespaces: ['default'] }, from: CANCELLABLE, now: T0, limit: 10, error: null });
      assert.deepEqual(tasks.map((t) => t.namespace), ['default', 'default']);
      assert.deepEqual(await counted(['team-a']), ['l/0/queued:1']);
      await assertCountersEqualRecount(h.store);
    });

    it('CreatesOneTaskForConcurrentSubmitsOfOneKey', async () => {
      const results = await Promise.all(Array.from({ length: 6 }, () => insert([task('once', { idempotencyKey: 'same' })])));
      assert.equal(results.filter(([r]) => r.created).length, 1);
      assert.equal(new Set(results.map(([r]) => r.task.id)).size, 1);
    });

    it('CancelsOrRetriesOnlyFromTheStatusesItIsGiven, and reports the status when refused', async () => {
      const a = await h.agent(['cr']);
      const [queued, leased, done] = await h.submit(task('cr', { priority: 2 }), task('cr', { priority: 1 }), task('cr'));
      await h.store.taskClaim({ agentId: a, max: 2, now: T0 });
      assert.equal(written(await h.store.taskCancel({ id: queued.id, now: T0, from: CANCELLABLE, error: null })).status, 'cancelled');
      const [next] = (await h.store.taskClaim({ agentId: a, max: 1, now: T0 })).tasks;
      assert.equal(next.id, done.id);
      await h.store.taskComplete({ id: done.id, agentId: a, result: null, now: T0 });
      refused(await h.store.taskCancel({ id: leased.id, now: T0 + 1, from: ['queued'], error: null }), { status: 'leased' });
      assert.equal(written(await h.store.taskCancel({ id: leased.id, now: T0 + 1, from: CANCELLABLE, error: null })).status, 'cancelled');
      refused(await h.store.taskComplete({ id: leased.id, agentId: a, result: 1, now: T0 }), { status: 'cancelled' });
      refused(await h.store.taskCancel({ id: done.id, now: T0, from: CANCELLABLE, error: null }), { status: 'completed' });
      refused(await h.store.taskCancel({ id: 424_242, now: T0, from: CANCELLABLE, error: null }), undefined);
      refused(await h.store.taskRetry({ id: done.id, now: T0, from: RETRYABLE }), { status: 'completed' });
      const retried = written(await h.store.taskRetry({ id: leased.id, now: T0 + 9, from: RETRYABLE }));
      assert.equal(retried.status, 'queued');
      assert.equal(retried.attempts, 0);
      assert.equal(retried.completedAt, null);
      assert.equal(retried.runAt, T0 + 9);
      await assertCountersEqualRecount(h.store);
    });

    it('PagesTasksNewestFirstOrOldestFirst with filters, and refuses foreign cursors', async () => {
      const made = await h.submit(...Array.from({ length: 12 }, (_, i) => task(i % 3 ? 'p' : 'q', { payload: i })));
      const seen: number[] = [];
      let cursor: string | undefined;
      do {
        const page = await h.store.taskList({ type: 'p', limit: 3, cursor });
        seen.push(...page.items.map((t) => t.id));
        cursor = page.nextCursor ?? undefined;
      } while (cursor);
      assert.deepEqual(seen, made.filter((t) => t.type === 'p').map((t) => t.id).reverse());
      const asc = await h.store.taskList({ status: 'queued', limit: 100, order: 'asc' });
      assert.deepEqual(asc.items.map((t) => t.id), made.map((t) => t.id));
      assert.equal(asc.nextCursor, null);
      assert.deepEqual(payloadOf(asc.items[4]), 4);
      await rejectsWith(h.store.taskList({ limit: 3, cursor: 'not a cursor!' }), 'FLEETD_ERR_VALIDATION');
    });

    it('DeletesFinishedTasksOlderThanRetention, in batches', async () => {
      const a = await h.agent(['old'], 100);
      const made = await h.submit(...Array.from({ length: 4 }, () => task('old')));
      await h.store.taskClaim({ agentId: a, max: 3, now: T0 });
      for (const t of made.slice(0, 3)) await h.store.taskComplete({ id: t.id, agentId: a, result: null, now: T0 + 10 });
      assert.equal(await h.store.taskDeleteFinished({ before: T0 + 10, limit: 10 }), 0);
      assert.equal(await h.store.taskDeleteFinished({ before: T0 + 11, limit: 2 }), 2);
      assert.equal(await h.store.taskDeleteFinished({ before: T0 + 11, limit: 10 }), 1);
      assert.deepEqual((await allTasks(h.store)).map((t) => t.id), [made[3].id]);
      await assertCountersEqualRecount(h.store);
    });

    it('KeepsALongPayloadWholeThroughEveryChange: found, read, listed, leased, read back, extended, failed, released, completed, cancelled, retried, deleted', async () => {
      // Long enough that SQLite keeps it outside its task's row (INLINE_PAYLOAD_MAX); PostgreSQL keeps it in the row.
      const payload = { prompt: 'é ✓ "quoted" \n'.repeat(400), n: [1, 2.5, null] };
      const a = await h.agent(['long']);
      const keyed = task('long', { payload, idempotencyKey: 'long-1' });
      const [first, second, third] = await h.submit(keyed, task('long', { payload }), task('long', { payload }));
      assert.deepEqual(payloadOf(first), payload, 'as inserted');
      const [again] = await h.store.taskInsertMany({ tasks: [keyed], now: T0, onRepeat: repeatCheck('task', [keyed]) });
      assert.equal(again.created, false);
      assert.deepEqual(payloadOf(again.task), payload, 'found by its idempotency key');
      assert.deepEqual(payloadOf((await h.store.taskGet({ id: first.id }))!), payload);
      assert.deepEqual((await h.store.taskList({ limit: 10 })).items.map((t) => payloadOf(t)), [payload, payload, payload]);
      const claimed = await h.store.taskClaim({ agentId: a, max: 3, now: T0, claimId: 7 });
      assert.deepEqual(claimed.tasks.map((t) => payloadOf(t)), [payload, payload, payload]);
      assert.deepEqual((await h.store.taskLeasedByClaims({ agentId: a, claimIds: [7] })).map((t) => payloadOf(t)), [payload, payload, payload]);
      const extended = written(await h.store.taskExtendLease({ id: first.id, agentId: a, now: T0 + 1 }));
      assert.equal((extended as Partial<Task>).payloadJson, undefined, 'an extension does not read the payload');
      const failed = written(await h.store.taskFail({ id: first.id, agentId: a, now: T0 + 2, endLease: rules.failed(T0 + 2) }));
      assert.equal((failed as Partial<Task>).payloadJson, undefined, 'a failure does not read the payload');
      assert.deepEqual(payloadOf((await h.store.taskGet({ id: first.id }))!), payload, 'kept whole by its failure');
      const released = written(await h.store.taskRelease({ id: second.id, agentId: a, now: T0 + 2, status: 'queued', runAt: T0 + 2, error: null }));
      assert.equal((released as Partial<Task>).payloadJson, undefined, 'a release does not read the payload');
      assert.deepEqual(payloadOf((await h.store.taskGet({ id: second.id }))!), payload, 'kept whole by its release');
      const completed = written(await h.store.taskComplete({ id: third.id, agentId: a, result: 'done', now: T0 + 3 }));
      assert.equal((completed as Partial<Task>).payloadJson, undefined, 'a completion does not read its payload back');
      assert.deepEqual(payloadOf((await h.store.taskGet({ id: third.id }))!), payload, 'kept whole by its completion');
      assert.deepEqual(payloadOf(written(await h.store.taskCancel({ id: second.id, now: T0 + 4, from: CANCELLABLE, error: null }))), payload);
      assert.deepEqual(payloadOf(written(await h.store.taskRetry({ id: second.id, now: T0 + 5, from: RETRYABLE }))), payload);
      const deleted = await h.store.taskBulkApply({ action: 'delete', filter: { namespaces: ['default'] }, from: ['completed'], now: T0 + 6, limit: 10, error: null });
      assert.deepEqual(deleted.tasks.map((t) => [t.id, payloadOf(t)]), [[third.id, payload]], 'a deleted task is answered as it was');
      assert.deepEqual((await allTasks(h.store)).map((t) => [t.id, payloadOf(t)]), [[first.id, payload], [second.id, payload]]);
    });

    it('KeepsCountersEqualToARecount through a mixed, concurrent workload', async () => {
      const agents = await Promise.all([1, 2, 3].map(() => h.agent(['m1', 'm2'], 50)));
      await h.submit(...Array.from({ length: 40 }, (_, i) => task(i % 2 ? 'm1' : 'm2', { priority: i % 3, maxAttempts: 2 })));
      await h.submit(task('m1', { runAt: T0 + 100 }));
      const claims = await Promise.all(agents.map((a) => h.store.taskClaim({ agentId: a, max: 12, now: T0 })));
      const statusOf = (i: number): TaskStatus => (['completed', 'queued', 'dead', 'cancelled'] as const)[i % 4];
      await Promise.all(
        claims.flatMap((c, ai) =>
          c.tasks.map((t, i) => {
            const s = statusOf(i + ai);
            if (s === 'completed') return h.store.taskComplete({ id: t.id, agentId: agents[ai], result: i, now: T0 + 1 });
            if (s === 'cancelled') return h.store.taskCancel({ id: t.id, now: T0 + 1, from: CANCELLABLE, error: null });
            return h.store.taskFail({ id: t.id, agentId: agents[ai], now: T0 + 1, endLease: rules.failed(T0 + 1, s === 'queued', i) });
          }),
        ),
      );
      await h.store.taskClaim({ agentId: agents[0], max: 5, now: T0 + 2 });
      await h.store.taskRescueExpiredLeases({ now: T0 + 100_000, limit: 100, endLease: rules.expired(T0 + 100_000) });
      await h.store.taskPromoteScheduled({ now: T0 + 100_000, limit: 100 });
      await h.store.agentMarkStale({ staleBefore: T0 + 1, now: T0 + 100_000, limit: 1 });
      await assertCountersEqualRecount(h.store);
      const byStatus = Object.fromEntries((['scheduled', 'queued', 'leased', 'completed', 'dead', 'cancelled'] as const).map((s) => [s, 0])) as Record<
        TaskStatus,
        number
      >;
      for (const c of await h.store.taskCounts()) byStatus[c.status] += c.count;
      assert.equal(Object.values(byStatus).reduce((x, y) => x + y, 0), 41);
      assert.equal(byStatus.scheduled + byStatus.leased, 0);
    });
  });
}
