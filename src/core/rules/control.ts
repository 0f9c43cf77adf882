import type { ErrorCode } from '../../domain/errors.js';
import type { TaskSummary } from '../../domain/types.js';
import type { EndLease, EndingLease, LeaseEnd } from '../../store/store.js';
import { afterFailure, afterLostLease } from './retry.js';

/**
 * The rules of controlling work that runs: a cancel, an execution timeout, a schedule timeout, and
 * what the agent that holds an attempt the server ended is told.
 */

/** The error a cancelled task records; its message is the reason given, which the agent is told too. */
export function cancelledError(reason: string | undefined): { code: ErrorCode; message: string } {
  return { code: 'FLEETD_ERR_CANCELLED', message: reason ?? 'cancelled' };
}

/** The error an attempt records when it ran past its task's executionTimeoutMs. */
export function timeoutError(executionTimeoutMs: number): { code: ErrorCode; message: string } {
  return { code: 'FLEETD_ERR_TIMEOUT', message: `the attempt ran past its execution timeout of ${executionTimeoutMs} ms` };
}

/** The error a task records when nobody claimed it within its scheduleTimeoutMs. */
export function expiredError(): { code: ErrorCode; message: string } {
  return { code: 'FLEETD_ERR_EXPIRED', message: 'nobody claimed the task within its schedule timeout' };
}

/** When an unclaimed task expires: its scheduleTimeoutMs after it becomes due; never without one. */
export const expiryOf = (runAt: number, scheduleTimeoutMs: number | null): number | null =>
  scheduleTimeoutMs === null ? null : runAt + scheduleTimeoutMs;

/** Whether the attempt has run for its whole execution timeout by `now`. */
export const timedOut = (lease: EndingLease, now: number): boolean =>
  lease.executionTimeoutMs !== null && now >= lease.claimedAt + lease.executionTimeoutMs;

/**
 * A lease that ran out. The claim and every extension cap it at the attempt's execution timeout, so
 * one that ran out at that moment timed out: the attempt failed (retried after its backoff, or dead
 * once its attempts are spent), as a failure the agent reported would. Any other lapse is a lost
 * lease: back to the queue at once.
 */
export function afterLeaseRanOut(lease: EndingLease, p: { now: number; backoffMaxMs: number }): LeaseEnd {
  if (!timedOut(lease, p.now)) return afterLostLease(lease, { reason: 'expired', now: p.now });
  return afterFailure(lease, { error: timeoutError(lease.executionTimeoutMs!), retryable: true, now: p.now, backoffMaxMs: p.backoffMaxMs });
}

/** The rule for every lease the lease rescuer ends at `now`, as a store takes it. */
export const ranOutLeases =
  (now: number, backoffMaxMs: number): EndLease =>
  (lease) =>
    afterLeaseRanOut(lease, { now, backoffMaxMs });

/**
 * The cancel or timeout that ended a task's last attempt, from the error it recorded: its agent
 * must stop working on it. Undefined for a task that is leased or completed, or ended otherwise.
 */
export function endedByServer(task: TaskSummary): { code: 'FLEETD_ERR_CANCELLED' | 'FLEETD_ERR_TIMEOUT'; message: string } | undefined {
  if (task.status === 'leased' || task.status === 'completed') return undefined;
  const error = task.error as { code?: unknown; message?: unknown } | null;
  if (error?.code !== 'FLEETD_ERR_CANCELLED' && error?.code !== 'FLEETD_ERR_TIMEOUT') return undefined;
  return { code: error.code, message: typeof error.message === 'string' ? error.message : error.code };
}

/** Who must be told to stop working on a task, from the task as an event carries it; undefined: nobody. */
export function stopOrder(task: TaskSummary): { agentId: string; code: 'FLEETD_ERR_CANCELLED' | 'FLEETD_ERR_TIMEOUT'; reason: string } | undefined {
  const ended = task.agentId === null ? undefined : endedByServer(task);
  return ended && { agentId: task.agentId!, code: ended.code, reason: ended.message };
}
