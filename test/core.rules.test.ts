import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { repeatCheck, runRequestHash, taskRequestHash } from '../src/core/rules/idempotency.js';
import { decideLock } from '../src/core/rules/locks.js';
import { afterFailure, afterLostLease } from '../src/core/rules/retry.js';
import { leaseHeld, stateAllowed } from '../src/core/rules/tasks.js';
import { activityRefused, entrySize, retainedFloor } from '../src/core/rules/activity.js';
import { afterLeaseRanOut, cancelledError, expiryOf, stopOrder } from '../src/core/rules/control.js';
import { checkDependsOn, linkCheck } from '../src/core/rules/dependencies.js';
import { FleetError } from '../src/domain/errors.js';
import { requirementKey } from '../src/domain/requirements.js';
import type { Task } from '../src/domain/types.js';

const lease = (attempts: number, maxAttempts = 3) => ({ id: 7, agentId: 'a1', attempts, maxAttempts, backoffMs: 100, claimedAt: 0, executionTimeoutMs: null });
const code = (fn: () => unknown) => {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof FleetError);
    return [err.code, err.details];
  }
  assert.fail('expected a FleetError');
};

describe('the queue rules core decides', () => {
  it('RetriesAFailureAfterItsBackoff, buries it when not retryable or out of attempts', () => {
    const failure = { error: { why: 'x' }, retryable: true, now: 1_000, backoffMaxMs: 60_000 };
    const first = afterFailure(lease(1), failure);
    assert.equal(first.status, 'scheduled');
    assert.ok(first.status === 'scheduled' && first.runAt > 1_000 && first.runAt <= 1_100, 'base backoff, jittered down by at most 20 %');
    assert.deepEqual(first.error, { why: 'x' });
    assert.deepEqual(afterFailure(lease(1), { ...failure, retryable: false }), { status: 'dead', error: { why: 'x' } });
    assert.deepEqual(afterFailure(lease(3), failure), { status: 'dead', error: { why: 'x' } });
    const noBackoff = afterFailure({ ...lease(1), backoffMs: 0 }, failure);
    assert.deepEqual(noBackoff, { status: 'queued', runAt: 1_000, error: { why: 'x' } });
  });

  it('QueuesALostLeaseAgainAtOnce unless it was the last attempt, saying why', () => {
    assert.deepEqual(afterLostLease(lease(2), { reason: 'expired', now: 5 }), {
      status: 'queued',
      runAt: 5,
      error: { code: 'FLEETD_ERR_LEASE_EXPIRED', message: 'lease held by a1 expired' },
    });
    assert.deepEqual(afterLostLease(lease(3), { reason: 'agent_offline', now: 5 }), {
      status: 'dead',
      error: { code: 'FLEETD_ERR_AGENT_OFFLINE', message: 'agent a1 went offline' },
    });
  });

  it('HashesATaskAsKeysStoredBeforeWereHashed, from its payload or from the payload text given, with links too', () => {
    // The hash as every earlier release computed it, which the request_hash of keys in stores holds.
    const earlier = (t: { type: string; payload: unknown; priority: number; requires: string[] }) =>
      createHash('sha256').update(JSON.stringify([t.type, t.payload, t.priority, requirementKey(t.requires)])).digest('base64url');
    const text = fc.string({ unit: 'binary' });
    const links = fc.record({ parentId: fc.option(fc.nat()), dependsOn: fc.array(fc.nat(), { maxLength: 3 }), onDependencyFailure: fc.constantFrom('cancel', 'run') });
    fc.assert(
      fc.property(text, fc.jsonValue({ stringUnit: 'binary' }), fc.integer(), fc.array(text, { maxLength: 4 }), fc.option(links), (type, payload, priority, requires, linked) => {
        const t = { type, payload, priority, requires };
        assert.equal(taskRequestHash(t), earlier(t));
        assert.equal(taskRequestHash(t, JSON.stringify(payload)), earlier(t));
        // A task with links is hashed with [payload, links] as its payload (core/tasks.ts, toInsert).
        if (linked) assert.equal(taskRequestHash(t, `[${JSON.stringify(payload)},${JSON.stringify(linked)}]`), earlier({ ...t, payload: [payload, linked] }));
      }),
    );
  });

  it('ReusesARepeatedKeyForTheSameRequestAndRefusesAnother', () => {
    const same = taskRequestHash({ type: 't', payload: { a: 1 }, priority: 0, requires: ['y', 'x'] });
    assert.equal(same, taskRequestHash({ type: 't', payload: { a: 1 }, priority: 0, requires: ['x', 'y'] }), 'requirements are a set');
    assert.notEqual(same, taskRequestHash({ type: 't', payload: { a: 2 }, priority: 0, requires: ['x', 'y'] }));
    const check = repeatCheck('task', [{ idempotencyKey: 'k', requestHash: same }]);
    check({ index: 0, existing: { id: 3, requestHash: same } });
    assert.deepEqual(
      code(() => check({ index: 0, existing: { id: 3, requestHash: 'other' } })),
      ['FLEETD_ERR_IDEMPOTENCY_CONFLICT', { idempotencyKey: 'k', taskId: 3 }],
    );
    const run = runRequestHash({ pipeline: 'p', input: 1 });
    assert.deepEqual(
      code(() => repeatCheck('run', [{ idempotencyKey: 'r', requestHash: run }])({ index: 0, existing: { id: 9, requestHash: null } })),
      ['FLEETD_ERR_IDEMPOTENCY_CONFLICT', { idempotencyKey: 'r', runId: 9 }],
    );
  });

  it('TakesALockOnlyWhenNoLiveHolderRemains, replacing lapsed ones once each', () => {
    const lapsed = { resource: 'a', lockId: 'L1', agentId: 'x', expiresAt: 100 };
    const live = { resource: 'b', lockId: 'L2', agentId: 'y', expiresAt: 101 };
    assert.deepEqual(decideLock([], 100), { acquire: true, replace: [] });
    assert.deepEqual(decideLock([lapsed, { ...lapsed, resource: 'c' }], 100), { acquire: true, replace: ['L1'] });
    assert.deepEqual(decideLock([lapsed, live], 100), { acquire: false, conflicts: [live] });
  });

  it('SaysWhyAWriteWasRefused: gone, another holder, or a status that does not allow it', () => {
    const task = (status: Task['status'], agentId: string | null) => ({ status, agentId }) as Task;
    assert.deepEqual(code(() => leaseHeld({ task: undefined, current: undefined }, 7, 'a1'))[0], 'FLEETD_ERR_NOT_FOUND');
    assert.deepEqual(code(() => leaseHeld({ task: undefined, current: task('leased', 'b2') }, 7, 'a1')), [
      'FLEETD_ERR_LEASE_LOST',
      { taskId: 7, status: 'leased', holder: 'b2' },
    ]);
    assert.deepEqual(code(() => leaseHeld({ task: undefined, current: task('completed', 'a1') }, 7, 'a1'))[1], {
      taskId: 7,
      status: 'completed',
      holder: null,
    });
    assert.deepEqual(code(() => stateAllowed({ task: undefined, current: task('dead', null) }, 7, 'cancel')), [
      'FLEETD_ERR_TASK_STATE',
      { taskId: 7, status: 'dead' },
    ]);
  });

  it('FailsALeaseThatRanOutAtItsExecutionTimeout with backoff, and queues any other at once', () => {
    const timed = { ...lease(1), claimedAt: 1_000, executionTimeoutMs: 500 };
    const failed = afterLeaseRanOut(timed, { now: 1_500, backoffMaxMs: 60_000 });
    assert.equal(failed.status, 'scheduled', 'retried after its backoff, as a reported failure is');
    assert.deepEqual(failed.error, { code: 'FLEETD_ERR_TIMEOUT', message: 'the attempt ran past its execution timeout of 500 ms' });
    assert.equal(afterLeaseRanOut({ ...timed, attempts: 3 }, { now: 1_500, backoffMaxMs: 60_000 }).status, 'dead');
    const lost = afterLeaseRanOut(timed, { now: 1_499, backoffMaxMs: 60_000 });
    assert.deepEqual(lost, { status: 'queued', runAt: 1_499, error: { code: 'FLEETD_ERR_LEASE_EXPIRED', message: 'lease held by a1 expired' } });
    assert.equal(afterLeaseRanOut(lease(1), { now: 1e12, backoffMaxMs: 60_000 }).status, 'queued', 'no timeout: never timed out');
    assert.equal(expiryOf(100, null), null);
    assert.equal(expiryOf(100, 50), 150);
  });

  it('TellsTheHolderOfACancelledOrTimedOutTaskToStop, with the reason, and nobody else', () => {
    const task = (status: Task['status'], agentId: string | null, error: unknown) => ({ status, agentId, error }) as Task;
    assert.deepEqual(stopOrder(task('cancelled', 'a1', cancelledError('wrong input'))), { agentId: 'a1', code: 'FLEETD_ERR_CANCELLED', reason: 'wrong input' });
    assert.deepEqual(stopOrder(task('scheduled', 'a1', { code: 'FLEETD_ERR_TIMEOUT', message: 'slow' })), { agentId: 'a1', code: 'FLEETD_ERR_TIMEOUT', reason: 'slow' });
    assert.equal(stopOrder(task('cancelled', null, cancelledError(undefined))), undefined, 'never claimed: nobody holds it');
    assert.equal(stopOrder(task('queued', 'a1', { code: 'FLEETD_ERR_LEASE_EXPIRED' })), undefined);
    assert.equal(stopOrder(task('leased', 'a1', { code: 'FLEETD_ERR_TIMEOUT' })), undefined, 'leased again: its new holder works on');
    assert.deepEqual(code(() => leaseHeld({ task: undefined, current: task('cancelled', 'a1', cancelledError('stop')) }, 7, 'a1')), [
      'FLEETD_ERR_CANCELLED',
      { taskId: 7, status: 'cancelled', reason: 'stop' },
    ]);
    assert.equal(code(() => leaseHeld({ task: undefined, current: task('cancelled', 'b2', cancelledError('stop')) }, 7, 'a1'))[0], 'FLEETD_ERR_LEASE_LOST');
  });
});

describe('the rules of what agents report on their tasks', () => {
  const current = (status: Task['status'], agentId: string | null = 'a1') => ({ id: 7, status, agentId }) as Task;

  it('says why a report was refused: gone, finished or cancelled (with the state), or not the holder', () => {
    assert.equal(activityRefused(undefined, 7, 'a1').code, 'FLEETD_ERR_NOT_FOUND');
    for (const status of ['completed', 'dead', 'cancelled'] as const) {
      const err = activityRefused(current(status), 7, 'a1');
      assert.deepEqual([err.code, err.status, err.details], ['FLEETD_ERR_TASK_STATE', 409, { taskId: 7, status }]);
    }
    const other = activityRefused(current('leased', 'a2'), 7, 'a1');
    assert.deepEqual([other.code, other.details], ['FLEETD_ERR_LEASE_LOST', { taskId: 7, status: 'leased', holder: 'a2' }]);
    assert.deepEqual(activityRefused(current('queued', null), 7, 'a1').details, { taskId: 7, status: 'queued', holder: null });
  });

  it('keeps the newest lines and bytes within the bounds, and one progress report', () => {
    const floor = retainedFloor({ seq: 99, progress: 12, logLines: 1_500, outputBytes: 300_000 }, { logLines: 1_000, outputBytes: 262_144 });
    assert.deepEqual(floor, { progress: 11, log: 500, output: 37_856 });
    assert.equal(entrySize({ kind: 'output', text: 'héllo' }), 6, 'UTF-8 bytes');
    assert.equal(entrySize({ kind: 'log', level: 'info', message: 'x'.repeat(500) }), 1, 'a line is a line');
  });
});

describe('linkCheck and checkDependsOn: a new task with a parent or dependencies', () => {
  const links = (dependsOn: number[], onDependencyFailure: 'cancel' | 'run' = 'cancel', parentId: number | null = null) => ({
    links: { parentId, dependsOn, onDependencyFailure },
    runAt: 1_000,
  });

  it('waits while a dependency is unfinished, counting those; starts as a new task once all completed', () => {
    const check = linkCheck([links([1, 2, 3])], 1_000);
    const found = (statuses: string[]) => statuses.map((status, i) => ({ id: i + 1, status: status as Task['status'] }));
    assert.deepEqual(check({ index: 0, parentFound: false, dependencies: found(['completed', 'leased', 'waiting']) }), { status: 'waiting', pending: 2 });
    assert.deepEqual(check({ index: 0, parentFound: false, dependencies: found(['completed', 'completed', 'completed']) }), { status: 'queued', pending: 0 });
    const later = linkCheck([{ ...links([1]), runAt: 5_000 }], 1_000);
    assert.deepEqual(later({ index: 0, parentFound: false, dependencies: found(['completed']) }), { status: 'scheduled', pending: 0 });
  });

  it('is cancelled at once when a dependency failed already, unless it runs on failures', () => {
    const deps = [
      { id: 1, status: 'dead' as const },
      { id: 2, status: 'queued' as const },
    ];
    assert.deepEqual(linkCheck([links([1, 2])], 1_000)({ index: 0, parentFound: false, dependencies: deps }), { status: 'cancelled', pending: 1 });
    assert.deepEqual(linkCheck([links([1, 2], 'run')], 1_000)({ index: 0, parentFound: false, dependencies: deps }), { status: 'waiting', pending: 1 });
  });

  it('refuses a dependency or a parent that does not exist, naming them and the batch index', () => {
    const batch = [links([]), links([1, 8, 9])];
    assert.deepEqual(code(() => linkCheck(batch, 0)({ index: 1, parentFound: false, dependencies: [{ id: 1, status: 'queued' }] })), [
      'FLEETD_ERR_VALIDATION',
      { field: 'dependsOn', index: 1, missing: [8, 9] },
    ]);
    assert.deepEqual(code(() => linkCheck([links([], 'cancel', 5)], 0)({ index: 0, parentFound: false, dependencies: [] })), [
      'FLEETD_ERR_VALIDATION',
      { field: 'parentId', parentId: 5 },
    ]);
  });

  it('takes at most 1,000 distinct dependencies', () => {
    assert.deepEqual(checkDependsOn([3, 3, 4], {}), [3, 4]);
    assert.deepEqual(checkDependsOn(undefined, {}), []);
    assert.equal(code(() => checkDependsOn(Array.from({ length: 1001 }, (_, i) => i + 1), {}))[0], 'FLEETD_ERR_VALIDATION');
    assert.equal(code(() => checkDependsOn([0], {}))[0], 'FLEETD_ERR_VALIDATION');
  });
});
