import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { cancelledError, expiredError } from '../../src/core/rules/control.js';
import { CANCELLABLE, RETRYABLE } from '../../src/core/rules/tasks.js';
import { DELETABLE } from '../../src/core/rules/bulk.js';
import { T0, assertCountersEqualRecount, eachTest, refused, rules, task, written, type DriverFactory, payloadOf } from './harness.js';

/** Control of running work: a cancel's recorded reason, execution timeouts, schedule timeouts. */
export function exerciseControl(factory: DriverFactory): void {
  describe('task control', () => {
    const h = eachTest(factory);

    it('RecordsTheErrorACancelIsGiven, and keeps the holder it had', async () => {
      const a = await h.agent(['c']);
      const [t] = await h.submit(task('c'));
      await h.store.taskClaim({ agentId: a, max: 1, now: T0 });
      const cancelled = written(await h.store.taskCancel({ id: t.id, now: T0 + 5, from: CANCELLABLE, error: cancelledError('wrong input') }));
      assert.equal(cancelled.status, 'cancelled');
      assert.deepEqual(cancelled.error, { code: 'FLEETD_ERR_CANCELLED', message: 'wrong input' });
      assert.equal(cancelled.agentId, a, 'the agent to tell');
      assert.equal(cancelled.leaseExpiresAt, null);
      refused(await h.store.taskExtendLease({ id: t.id, agentId: a, now: T0 + 6 }), { status: 'cancelled', agentId: a });
    });

    it('CapsTheLeaseAtTheExecutionTimeout across extensions, and fails it as timed out when it runs out', async () => {
      const a = await h.agent(['slow']);
      const [t] = await h.submit(task('slow', { leaseMs: 1_000, executionTimeoutMs: 2_500 }));
      assert.equal(t.executionTimeoutMs, 2_500);
      const [claimed] = (await h.store.taskClaim({ agentId: a, max: 1, now: T0 })).tasks;
      assert.equal(claimed.leaseExpiresAt, T0 + 1_000, 'a lease shorter than the timeout is kept');
      assert.equal(written(await h.store.taskExtendLease({ id: t.id, agentId: a, now: T0 + 900 })).leaseExpiresAt, T0 + 1_900);
      assert.equal(written(await h.store.taskExtendLease({ id: t.id, agentId: a, now: T0 + 1_800 })).leaseExpiresAt, T0 + 2_500, 'capped');
      assert.equal(written(await h.store.taskExtendLease({ id: t.id, agentId: a, leaseMs: 60_000, now: T0 + 2_000 })).leaseExpiresAt, T0 + 2_500);
      assert.equal((await h.store.taskNextDeadlines()).leaseExpiresAt, T0 + 2_500);
      assert.deepEqual(await h.store.taskRescueExpiredLeases({ now: T0 + 2_499, limit: 10, endLease: rules.ranOut(T0 + 2_499) }), []);
      const [rescued] = await h.store.taskRescueExpiredLeases({ now: T0 + 2_500, limit: 10, endLease: rules.ranOut(T0 + 2_500) });
      assert.equal(rescued.task.status, 'scheduled', 'retried after its backoff');
      assert.equal((rescued.task.error as { code: string }).code, 'FLEETD_ERR_TIMEOUT');
      assert.equal(rescued.task.agentId, a, 'the agent to tell');

      const [short] = await h.submit(task('slow', { leaseMs: 1_000, executionTimeoutMs: 300 }));
      const [leased] = (await h.store.taskClaim({ agentId: a, max: 1, now: T0 + 3_000 })).tasks;
      assert.equal(leased.id, short.id);
      assert.equal(leased.leaseExpiresAt, T0 + 3_300, 'a timeout shorter than the lease caps the first lease');
      await assertCountersEqualRecount(h.store);
    });

    it('NeverHandsOutATaskPastItsScheduleTimeout, and sends it to dead', async () => {
      const a = await h.agent(['late']);
      const [soon, later, never] = await h.submit(
        task('late', { scheduleTimeoutMs: 100, payload: 'soon' }),
        task('late', { scheduleTimeoutMs: 100, runAt: T0 + 1_000, payload: 'later' }),
        task('late', { payload: 'never' }),
      );
      assert.equal(soon.scheduleTimeoutMs, 100);
      assert.equal(await h.store.taskNextExpiry(), T0 + 100);
      const claim = await h.store.taskClaim({ agentId: a, max: 5, now: T0 + 100 });
      assert.deepEqual(claim.tasks.map((t) => payloadOf(t)), ['never'], 'the expired one is skipped before the sweep');
      const expired = await h.store.taskExpireUnclaimed({ now: T0 + 100, limit: 10, error: expiredError() });
      assert.deepEqual(expired.map((e) => [e.task.id, e.from, e.task.status]), [[soon.id, 'queued', 'dead']]);
      assert.equal((expired[0].task.error as { code: string }).code, 'FLEETD_ERR_EXPIRED');
      assert.equal(expired[0].task.completedAt, T0 + 100);
      assert.equal(await h.store.taskNextExpiry(), T0 + 1_100, 'the delayed one expires after its runAt');
      await h.store.taskPromoteScheduled({ now: T0 + 1_000, limit: 10 });
      const [got] = (await h.store.taskClaim({ agentId: a, max: 1, now: T0 + 1_050 })).tasks;
      assert.equal(got.id, later.id, 'claimed in time');
      assert.equal(await h.store.taskNextExpiry(), null, 'a claimed task no longer expires');
      assert.deepEqual(await h.store.taskExpireUnclaimed({ now: T0 + 5_000, limit: 10, error: expiredError() }), []);
      assert.equal(never.scheduleTimeoutMs, null);
      await assertCountersEqualRecount(h.store);
    });

    it('HandsAPinnedTaskOnlyToItsAgent, and a label requirement only to agents with that label', async () => {
      const eu = `agent-eu-${Math.random()}`;
      await h.store.agentCreateMany([{ id: eu, name: eu, capabilities: ['pin'], labels: { region: 'eu' }, maxConcurrency: 10, namespace: 'default', tokenHash: `hash-${eu}`, now: T0 }]);
      const other = await h.agent(['pin']);
      const [pinned, euOnly] = await h.submit(task('pin', { requires: ['pin', `agent:${eu}`] }), task('pin', { requires: ['pin', 'label:region=eu'] }));
      assert.deepEqual((await h.store.taskClaim({ agentId: other, max: 5, now: T0 })).tasks, [], 'neither is for the other agent');
      const claimed = (await h.store.taskClaim({ agentId: eu, max: 5, now: T0 })).tasks.map((t) => t.id).sort((x, y) => x - y);
      assert.deepEqual(claimed, [pinned.id, euOnly.id]);
    });

    it('KeepsTagsAndMetadata, lists and acts on a tag, and forgets the tags of a deleted task', async () => {
      const [red, both, none] = await h.submit(
        task('t', { tags: ['red'], metadata: { owner: 'ana', n: 1 } }),
        task('t', { tags: ['red', 'blue'] }),
        task('t'),
      );
      assert.deepEqual([red.tags, red.metadata], [['red'], { owner: 'ana', n: 1 }]);
      assert.deepEqual([none.tags, none.metadata], [[], {}]);
      const ids = async (tag: string) => (await h.store.taskList({ tag, limit: 10 })).items.map((t) => t.id);
      assert.deepEqual(await ids('red'), [both.id, red.id]);
      assert.deepEqual(await ids('blue'), [both.id]);
      assert.deepEqual(await ids('green'), []);
      assert.deepEqual(await h.store.taskBulkCount({ filter: { tag: 'blue' }, from: CANCELLABLE }), { matched: 1, eligible: 1 });
      (await h.store.taskBulkApply({ action: 'cancel', filter: { tag: 'red' }, from: CANCELLABLE, now: T0 + 1, limit: 10, error: null })).tasks;
      const deleted = (await h.store.taskBulkApply({ action: 'delete', filter: { tag: 'blue' }, from: DELETABLE, now: T0 + 1, limit: 10, error: null })).tasks;
      assert.deepEqual(deleted.map((t) => t.id), [both.id]);
      assert.deepEqual(await ids('blue'), []);
      assert.equal(await h.store.taskDeleteFinished({ before: T0 + 2, limit: 10 }), 1, 'retention deletes a tagged task too');
      assert.deepEqual(await ids('red'), []);
      await assertCountersEqualRecount(h.store);
    });

    it('CountsAndActsOnWhatABulkFilterMatches, a chunk at a time, only from the statuses given', async () => {
      const a = await h.agent(['b1', 'b2'], 100);
      await h.submit(...Array.from({ length: 5 }, () => task('b1')), ...Array.from({ length: 3 }, () => task('b2')));
      await h.store.taskClaim({ agentId: a, max: 2, now: T0 });
      assert.deepEqual(await h.store.taskBulkCount({ filter: { type: 'b1' }, from: CANCELLABLE }), { matched: 5, eligible: 5 });
      assert.deepEqual(await h.store.taskBulkCount({ filter: { type: 'b1', status: 'leased' }, from: CANCELLABLE }), { matched: 2, eligible: 2 });
      assert.deepEqual(await h.store.taskBulkCount({ filter: {}, from: RETRYABLE }), { matched: 8, eligible: 0 });
      assert.deepEqual(await h.store.taskBulkCount({ filter: { createdBefore: T0 }, from: CANCELLABLE }), { matched: 0, eligible: 0 });

      const params = { action: 'cancel' as const, filter: { type: 'b1' }, from: CANCELLABLE, now: T0 + 1, limit: 3, error: cancelledError('bulk') };
      const { tasks: first } = await h.store.taskBulkApply(params);
      assert.equal(first.length, 3, 'one chunk');
      assert.ok(first.every((t) => t.status === 'cancelled' && (t.error as { code: string }).code === 'FLEETD_ERR_CANCELLED'));
      assert.deepEqual(first.slice(0, 2).map((t) => t.agentId), [a, a], 'the leased ones keep their holder, to be told');
      assert.equal((await h.store.taskBulkApply(params)).tasks.length, 2, 'the rest');
      assert.deepEqual((await h.store.taskBulkApply(params)).tasks, [], 'nothing left in those statuses');

      const { tasks: retried } = await h.store.taskBulkApply({ ...params, action: 'retry', from: RETRYABLE, limit: 10 });
      assert.deepEqual([retried.length, retried[0].status, retried[0].attempts], [5, 'queued', 0]);
      assert.deepEqual(
        (await h.store.taskBulkApply({ ...params, action: 'delete', filter: {}, from: DELETABLE, limit: 10 })).tasks,
        [],
        'nothing finished to delete',
      );
      await h.store.taskBulkApply({ ...params, filter: { type: 'b2' }, limit: 10 });
      const { tasks: deleted } = await h.store.taskBulkApply({ ...params, action: 'delete', filter: {}, from: DELETABLE, limit: 10 });
      assert.deepEqual(deleted.map((t) => t.type), ['b2', 'b2', 'b2']);
      assert.equal((await h.store.taskBulkCount({ filter: {}, from: DELETABLE })).matched, 5);
      await assertCountersEqualRecount(h.store);
    });
  });
}
