import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { linkCheck } from '../../src/core/rules/dependencies.js';
import { repeatCheck } from '../../src/core/rules/idempotency.js';
import { CANCELLABLE, RETRYABLE } from '../../src/core/rules/tasks.js';
import { FleetError } from '../../src/domain/errors.js';
import type { OnDependencyFailure, Task } from '../../src/domain/types.js';
import type { TaskInsertParams } from '../../src/store/store.js';
import { T0, allTasks, assertCountersEqualRecount, eachTest, rules, task, written, type DriverFactory, payloadOf } from './harness.js';

/** A task with links, as core hands it to the store. */
function linked(type: string, links: { parentId?: number; dependsOn?: number[]; onDependencyFailure?: OnDependencyFailure }, extra: Partial<TaskInsertParams> = {}): TaskInsertParams {
  return {
    ...task(type, extra),
    links: { parentId: links.parentId ?? null, dependsOn: links.dependsOn ?? [], onDependencyFailure: links.onDependencyFailure ?? 'cancel' },
  };
}

/** Children and dependencies: the waiting status, release in the finishing write, failures, counts. */
export function exerciseDependencies(factory: DriverFactory, sharesItsStore: boolean): void {
  describe('dependencies', () => {
    const h = eachTest(factory);
    const submit = async (...tasks: TaskInsertParams[]): Promise<Task[]> =>
      (await h.store.taskInsertMany({ tasks, now: T0, onRepeat: repeatCheck('task', tasks), onLinks: linkCheck(tasks, T0) })).map((r) => r.task);
    const lease = async (agentId: string, n: number) => (await h.store.taskClaim({ agentId, max: n, now: T0 })).tasks;

    it('StoresTheResultTextItIsGiven: the task answered, the row and the dependent each see that result', async () => {
      const a = await h.agent(['rj']);
      const [dep] = await submit(task('rj'));
      const [join] = await submit(linked('rj-join', { dependsOn: [dep.id] }));
      await lease(a, 1);
      const result = { text: 'é'.repeat(3), n: [1, 2.5, null] };
      const done = await h.store.taskComplete({ id: dep.id, agentId: a, result, resultJson: JSON.stringify(result), now: T0 + 1 });
      assert.deepEqual(written(done).result, result);
      assert.deepEqual((await h.store.taskGet({ id: dep.id }))?.result, result, 'read back from the row');
      assert.deepEqual((await h.store.taskDependencies({ ids: [join.id] })).get(join.id), [{ id: dep.id, status: 'completed', result, error: null }]);
    });

    it('AnswersACompletionAsTheTaskIsButItsPayload: every other column read back, for a task with a parent, a dependency and a dependent', async () => {
      const a = await h.agent(['cp']);
      const [parent] = await submit(task('cp-parent'));
      const [dep] = await submit(task('cp'));
      await lease(a, 1);
      written(await h.store.taskComplete({ id: dep.id, agentId: a, result: 'dep', now: T0 + 1 }));
      const [t] = await submit(linked('cp', { parentId: parent.id, dependsOn: [dep.id] }, { payload: { p: 1 }, tags: ['x'], metadata: { m: 1 }, concurrencyKey: 'tenant', locks: ['/f'] }));
      const [dependent] = await submit(linked('cp-after', { dependsOn: [t.id] }));
      await h.store.taskClaim({ agentId: a, max: 1, now: T0 + 2, claimId: 3 });
      const write = await h.store.taskComplete({ id: t.id, agentId: a, result: { r: 1 }, now: T0 + 3 });
      const { payloadJson: _completedPayload, ...completed } = written(write) as Task;
      const { payloadJson, ...whole } = (await h.store.taskGet({ id: t.id }))!;
      assert.deepEqual(completed, whole);
      assert.deepEqual([completed.parentId, completed.dependencyCount, completed.dependenciesPending, completed.status], [parent.id, 1, 0, 'completed']);
      assert.equal(payloadJson, '{"p":1}');
      assert.deepEqual(write.released?.map((r) => [r.task.id, r.task.status]), [[dependent.id, 'queued']], 'its dependent released by the completion');
    });

    it('AnswersAnExtensionAFailureAndAReleaseAsTheTaskIsButItsPayload: every other column read back', async () => {
      const a = await h.agent(['xfr'], 5);
      const [parent] = await submit(task('xfr-parent'));
      const [dep] = await submit(task('xfr'));
      await lease(a, 1);
      written(await h.store.taskComplete({ id: dep.id, agentId: a, result: 'dep', now: T0 + 1 }));
      const ids: number[] = [];
      for (let i = 0; i < 3; i++) {
        const extra = { payload: { p: 1 }, tags: ['x'], metadata: { m: 1 }, concurrencyKey: `tenant-${i}`, locks: [`/f${i}`] };
        ids.push((await submit(linked('xfr', { parentId: parent.id, dependsOn: [dep.id] }, extra)))[0].id);
      }
      await h.store.taskClaim({ agentId: a, max: 3, now: T0 + 2, claimId: 3 });
      const [toExtend, toFail, toRelease] = ids;
      const writes = [
        await h.store.taskExtendLease({ id: toExtend, agentId: a, leaseMs: 60_000, now: T0 + 3 }),
        await h.store.taskFail({ id: toFail, agentId: a, now: T0 + 3, endLease: rules.failed(T0 + 3) }),
        await h.store.taskRelease({ id: toRelease, agentId: a, now: T0 + 3, status: 'scheduled', runAt: T0 + 60_000, error: { code: 'FLEETD_ERR_RELEASED' } }),
      ];
      for (const [i, write] of writes.entries()) {
        const { payloadJson: _answered, ...answered } = written(write) as Task;
        const { payloadJson, ...whole } = (await h.store.taskGet({ id: ids[i] }))!;
        assert.deepEqual(answered, whole);
        assert.deepEqual([answered.parentId, answered.dependencyCount, answered.tags, answered.locks], [parent.id, 1, ['x'], [`/f${i}`]]);
        assert.equal(payloadJson, '{"p":1}');
      }
      const [extended, failed, released] = writes.map((w) => written(w));
      assert.deepEqual([extended.status, extended.leaseExpiresAt, released.status], ['leased', T0 + 3 + 60_000, 'scheduled']);
      assert.ok(['queued', 'scheduled'].includes(failed.status) && failed.attempts === 1, 'failed for a retry');
    });

    it('KeepsALongPayloadWholeThroughTheQueuesOwnWrites: linked, released by its dependency, expired, rescued, promoted, with its agent gone, in bulk', async () => {
      // Long enough that SQLite keeps it outside its task's row; see KeepsALongPayloadWholeThroughEveryChange.
      const payload = { prompt: 'é ✓ "quoted" \n'.repeat(400) };
      const long = (extra: Partial<TaskInsertParams> = {}) => task('long', { payload, ...extra });
      const payloads = (tasks: Task[]) => tasks.map((t) => payloadOf(t));
      // A write that ends a lease answers its task without the payload (TaskWithoutPayload): what it
      // left in the store is read back instead.
      const stored = (tasks: { id: number }[]) => Promise.all(tasks.map(async (t) => payloadOf((await h.store.taskGet({ id: t.id }))!)));
      const a = await h.agent(['dep', 'long'], 20);
      const [dep] = await submit(task('dep'));
      const [join, soon] = await submit(linked('long', { dependsOn: [dep.id] }, { payload }), long({ scheduleTimeoutMs: 100 }));
      assert.deepEqual([join.status, payloadOf(join)], ['waiting', payload], 'as its links were written');
      assert.deepEqual(payloads(await lease(a, 1)), [{ type: 'dep' }]);
      const done = await h.store.taskComplete({ id: dep.id, agentId: a, result: 1, now: T0 + 1 });
      assert.deepEqual(await stored(done.released!.map((r) => r.task)), [payload], 'released by its dependency');
      const expired = await h.store.taskExpireUnclaimed({ now: T0 + 100, limit: 10, error: null });
      assert.deepEqual([expired.map((e) => e.task.id), await stored(expired.map((e) => e.task))], [[soon.id], [payload]], 'expired unclaimed');
      const [later] = await submit(long({ runAt: T0 + 500 }));
      assert.deepEqual(payloads(await lease(a, 5)), [payload]);
      const rescued = await h.store.taskRescueExpiredLeases({ now: T0 + 1_000, limit: 10, endLease: rules.expired(T0 + 1_000) });
      assert.deepEqual([rescued.map((r) => r.task.id), await stored(rescued.map((r) => r.task))], [[join.id], [payload]], 'its lease rescued');
      assert.equal((rescued[0].task as Partial<Task>).payloadJson, undefined, 'a rescue does not read the payload');
      const promoted = await h.store.taskPromoteScheduled({ now: T0 + 1_000, limit: 10 });
      assert.deepEqual([promoted.map((r) => r.task.id), await stored(promoted.map((r) => r.task))], [[later.id], [payload]], 'promoted when due');
      const b = await h.agent(['long'], 1);
      assert.deepEqual(payloads((await h.store.taskClaim({ agentId: b, max: 1, now: T0 + 1_000 })).tasks), [payload]);
      const gone = await h.store.agentDelete({ id: b, now: T0 + 1_001, endLease: rules.offline(T0 + 1_001) });
      assert.deepEqual(await stored(gone!.tasks.map((r) => r.task)), [payload], 'released with its agent');
      assert.equal((gone!.tasks[0].task as Partial<Task>).payloadJson, undefined, 'nor does an agent gone');
      const filter = { namespaces: ['default'], type: 'long' };
      const cancelled = await h.store.taskBulkApply({ action: 'cancel', filter, from: CANCELLABLE, now: T0 + 2_000, limit: 10, error: null });
      assert.deepEqual(payloads(cancelled.tasks), [payload, payload], 'cancelled in bulk');
      const retried = await h.store.taskBulkApply({ action: 'retry', filter, from: RETRYABLE, now: T0 + 2_001, limit: 10, error: null });
      assert.deepEqual(payloads(retried.tasks), [payload, payload, payload], 'retried in bulk');
    });

    it('WaitsUntilEveryDependencyCompletes, released in the write that completes the last, with their results', async () => {
      const a = await h.agent(['dep', 'join']);
      const deps = await submit(task('dep', { payload: 1 }), task('dep', { payload: 2 }));
      const [join] = await submit(linked('join', { dependsOn: deps.map((d) => d.id) }));
      assert.equal(join.status, 'waiting');
      assert.equal(join.dependencyCount, 2);
      assert.equal(join.dependenciesPending, 2);
      const leased = await lease(a, 10);
      assert.deepEqual(leased.map((t) => t.id), deps.map((d) => d.id), 'a waiting task is never claimed');
      const first = await h.store.taskComplete({ id: deps[0].id, agentId: a, result: { n: 1 }, now: T0 + 1 });
      assert.equal(first.released, undefined);
      assert.equal((await h.store.taskGet({ id: join.id }))?.dependenciesPending, 1);
      const second = await h.store.taskComplete({ id: deps[1].id, agentId: a, result: { n: 2 }, now: T0 + 2 });
      assert.deepEqual(second.released?.map((r) => [r.task.id, r.from, r.task.status]), [[join.id, 'waiting', 'queued']]);
      const [claimed] = await lease(a, 10);
      assert.equal(claimed.id, join.id);
      const deps2 = (await h.store.taskDependencies({ ids: [join.id] })).get(join.id);
      assert.deepEqual(deps2, [
        { id: deps[0].id, status: 'completed', result: { n: 1 }, error: null },
        { id: deps[1].id, status: 'completed', result: { n: 2 }, error: null },
      ]);
      await assertCountersEqualRecount(h.store);
    });

    it('StartsQueuedWhenTheDependenciesAreDoneAlready, scheduled when its runAt lies ahead', async () => {
      const a = await h.agent(['dep']);
      const [dep] = await submit(task('dep'));
      await lease(a, 1);
      written(await h.store.taskComplete({ id: dep.id, agentId: a, result: 'done', now: T0 }));
      const [now, later] = await submit(linked('join', { dependsOn: [dep.id] }), linked('join', { dependsOn: [dep.id] }, { runAt: T0 + 60_000 }));
      assert.equal(now.status, 'queued');
      assert.equal(now.dependenciesPending, 0);
      assert.equal(later.status, 'scheduled');
      assert.deepEqual((await h.store.taskDependencies({ ids: [now.id] })).get(now.id), [{ id: dep.id, status: 'completed', result: 'done', error: null }]);
    });

    it('ReleasesAsScheduled a waiting task whose runAt lies ahead when its last dependency completes', async () => {
      const a = await h.agent(['dep']);
      const [dep] = await submit(task('dep'));
      const [join] = await submit(linked('join', { dependsOn: [dep.id] }, { runAt: T0 + 60_000 }));
      await lease(a, 1);
      const done = await h.store.taskComplete({ id: dep.id, agentId: a, result: null, now: T0 + 1 });
      assert.deepEqual(done.released?.map((r) => r.task.status), ['scheduled']);
      assert.equal((await h.store.taskGet({ id: join.id }))?.runAt, T0 + 60_000);
    });

    it('RefusesTheWholeBatch for an unknown dependency or parent, writing nothing', async () => {
      const [dep] = await submit(task('dep'));
      for (const bad of [linked('join', { dependsOn: [dep.id, 999_999] }), linked('child', { parentId: 999_999 })]) {
        await assert.rejects(submit(task('other'), bad), (err: unknown) => {
          assert.ok(err instanceof FleetError);
          assert.equal(err.code, 'FLEETD_ERR_VALIDATION');
          assert.equal(err.details.field, bad.links!.parentId === null ? 'dependsOn' : 'parentId');
          return true;
        });
      }
      assert.deepEqual((await allTasks(h.store)).map((t) => t.id), [dep.id]);
      assert.equal((await h.store.taskGet({ id: dep.id }))?.status, 'queued');
      await assertCountersEqualRecount(h.store);
    });

    it('ListsChildrenByParent, oldest first, in pages', async () => {
      const [parent, other] = await submit(task('plan'), task('plan'));
      const children = await submit(...Array.from({ length: 5 }, () => linked('child', { parentId: parent.id })), linked('child', { parentId: other.id }));
      assert.ok(children.every((c) => c.status === 'queued' && c.dependencyCount === 0));
      const first = await h.store.taskList({ parentId: parent.id, limit: 3, order: 'asc' });
      const rest = await h.store.taskList({ parentId: parent.id, limit: 3, order: 'asc', cursor: first.nextCursor! });
      assert.deepEqual([...first.items, ...rest.items].map((t) => t.id), children.slice(0, 5).map((c) => c.id));
      assert.equal(rest.nextCursor, null);
      assert.ok(first.items.every((t) => t.parentId === parent.id));
    });

    it('CancelsWaitingTasksWhenADependencyDies, down the chain; onDependencyFailure run queues with the failure listed', async () => {
      const a = await h.agent(['dep']);
      const [dep, ok] = await submit(task('dep'), task('dep'));
      const [cancelled, runs] = await submit(linked('join', { dependsOn: [dep.id, ok.id] }), linked('join', { dependsOn: [dep.id], onDependencyFailure: 'run' }));
      const [grandchild] = await submit(linked('after', { dependsOn: [cancelled.id] }));
      await lease(a, 2);
      const failed = await h.store.taskFail({ id: dep.id, agentId: a, now: T0 + 1, endLease: rules.failed(T0 + 1, false, { why: 'broken' }) });
      assert.equal(written(failed).status, 'dead');
      const released = new Map(failed.released?.map((r) => [r.task.id, r.task]));
      assert.equal(released.get(cancelled.id)?.status, 'cancelled');
      assert.equal((released.get(cancelled.id)?.error as { code: string } | undefined)?.code, 'FLEETD_ERR_DEPENDENCY_FAILED');
      assert.equal(released.get(runs.id)?.status, 'queued');
      assert.equal(released.get(grandchild.id)?.status, 'cancelled', 'the cancellation reaches what waited on the cancelled task');
      assert.deepEqual((await h.store.taskDependencies({ ids: [runs.id] })).get(runs.id), [{ id: dep.id, status: 'dead', result: null, error: { why: 'broken' } }]);
      // The other dependency completing later changes nothing for the cancelled task.
      const late = await h.store.taskComplete({ id: ok.id, agentId: a, result: null, now: T0 + 2 });
      assert.equal(late.released, undefined);
      assert.equal((await h.store.taskGet({ id: cancelled.id }))?.status, 'cancelled');
      await assertCountersEqualRecount(h.store);
    });

    it('CancelsDependentsOfTasksCancelledInBulk in the same write, and leaves a retry of them alone', async () => {
      const [gone, kept] = await submit(task('bulk-dep'), task('bulk-other'));
      const [onGone, onKept] = await submit(linked('join', { dependsOn: [gone.id] }), linked('join', { dependsOn: [kept.id] }));
      const cancelled = await h.store.taskBulkApply({ action: 'cancel', filter: { type: 'bulk-dep' }, from: CANCELLABLE, now: T0, limit: 10, error: null });
      assert.deepEqual(cancelled.tasks.map((t) => t.id), [gone.id]);
      assert.deepEqual(cancelled.released.map((r) => [r.task.id, r.task.status, r.from]), [[onGone.id, 'cancelled', 'waiting']]);
      assert.equal((await h.store.taskGet({ id: onKept.id }))?.status, 'waiting');
      const retried = await h.store.taskBulkApply({ action: 'retry', filter: { type: 'bulk-dep' }, from: ['cancelled'], now: T0, limit: 10, error: null });
      assert.deepEqual(retried.released, []);
      await assertCountersEqualRecount(h.store);
    });

    it('CancelsDependentsOfACancelledTask in the cancel, and of one whose lease expired for the last time in the rescue', async () => {
      const a = await h.agent(['dep']);
      const [gone, expiring] = await submit(task('dep'), task('dep', { maxAttempts: 1 }));
      const [onGone, onExpiring] = await submit(linked('join', { dependsOn: [gone.id] }), linked('join', { dependsOn: [expiring.id] }));
      const cancel = await h.store.taskCancel({ id: gone.id, now: T0, from: CANCELLABLE, error: null });
      assert.deepEqual(cancel.released?.map((r) => [r.task.id, r.task.status]), [[onGone.id, 'cancelled']]);
      await lease(a, 1);
      const rescued = await h.store.taskRescueExpiredLeases({ now: T0 + 5_000, limit: 10, endLease: rules.expired(T0 + 5_000) });
      assert.deepEqual(
        rescued.map((r) => [r.task.id, r.from, r.task.status]),
        [
          [expiring.id, 'leased', 'dead'],
          [onExpiring.id, 'waiting', 'cancelled'],
        ],
      );
      await assertCountersEqualRecount(h.store);
    });

    it('ReleasesAJoinOnceWhenItsDependenciesCompleteConcurrently', async () => {
      const a = await h.agent(['dep'], 100);
      const deps = await submit(...Array.from({ length: 40 }, () => task('dep')));
      const [join] = await submit(linked('join', { dependsOn: deps.map((d) => d.id) }));
      await lease(a, 100);
      const writes = await Promise.all(deps.map((d) => h.store.taskComplete({ id: d.id, agentId: a, result: d.id, now: T0 + 1 })));
      const releases = writes.flatMap((w) => w.released ?? []);
      assert.deepEqual(releases.map((r) => r.task.id), [join.id]);
      const after = await h.store.taskGet({ id: join.id });
      assert.equal(after?.status, 'queued');
      assert.equal(after?.dependenciesPending, 0);
      assert.equal((await h.store.taskDependencies({ ids: [join.id] })).get(join.id)?.length, 40);
    });

    // Only for drivers several nodes share (supportsListen): another node is a sibling driver.
    if (sharesItsStore) it('ReleasesAJoinOnceWhenTwoNodesCompleteItsDependenciesTogether', async () => {
      const sibling = h.openSibling();
      try {
        const a = await h.agent(['dep'], 100);
        const joins = [];
        const deps = await submit(...Array.from({ length: 60 }, () => task('dep')));
        // Three joins over overlapping dependencies, so that both nodes update the same dependents.
        for (const range of [[0, 60], [0, 30], [20, 60]]) joins.push((await submit(linked('join', { dependsOn: deps.slice(range[0], range[1]).map((d) => d.id) })))[0]);
        await lease(a, 100);
        const writes = await Promise.all(
          deps.map((d, i) => (i % 2 ? sibling.store : h.store).taskComplete({ id: d.id, agentId: a, result: i, now: T0 + 1 })),
        );
        const released = writes.flatMap((w) => w.released ?? []).map((r) => r.task.id).sort((x, y) => x - y);
        assert.deepEqual(released, joins.map((j) => j.id).sort((x, y) => x - y), 'each join released once');
        for (const j of joins) assert.equal((await h.store.taskGet({ id: j.id }))?.status, 'queued');
        await assertCountersEqualRecount(h.store);
      } finally {
        await sibling.close();
      }
    });
  });
}
