import type { ErrorCode } from '../../domain/errors.js';
import type { EndLease, EndingLease, LeaseEnd } from '../../store/store.js';
import { retryDelay } from '../backoff.js';

/**
 * What becomes of a task whose lease ends without a result: the one rule for dead or re-queue,
 * whatever ended the lease. A task that may not be retried, or has spent its attempts, is dead;
 * any other goes back to the queue at `runAt`, scheduled when that lies ahead.
 */
function endOf(lease: EndingLease, p: { retryable: boolean; runAt: number; now: number; error: unknown }): LeaseEnd {
  if (!p.retryable || lease.attempts >= lease.maxAttempts) return { status: 'dead', error: p.error };
  return { status: p.runAt > p.now ? 'scheduled' : 'queued', runAt: p.runAt, error: p.error };
}

/** The agent reported a failure: retried after the task's backoff for the attempt just spent (capped at backoffMaxMs). */
export function afterFailure(lease: EndingLease, p: { error: unknown; retryable: boolean; now: number; backoffMaxMs: number }): LeaseEnd {
  const runAt = p.now + retryDelay(lease.attempts, lease.backoffMs, p.backoffMaxMs);
  return endOf(lease, { retryable: p.retryable, runAt, now: p.now, error: p.error });
}

/**
 * The lease ran out, or its agent went away: the task is queued again at once (the agent, not the
 * task, failed), unless that was its last attempt.
 */
export function afterLostLease(lease: EndingLease, p: { reason: 'expired' | 'agent_offline'; now: number }): LeaseEnd {
  const error: { code: ErrorCode; message: string } =
    p.reason === 'expired'
      ? { code: 'FLEETD_ERR_LEASE_EXPIRED', message: `lease held by ${lease.agentId} expired` }
      : { code: 'FLEETD_ERR_AGENT_OFFLINE', message: `agent ${lease.agentId} went offline` };
  return endOf(lease, { retryable: true, runAt: p.now, now: p.now, error });
}

/** The rule for every lease a sweep or a release ends at `now` for this reason, as a store takes it. */
export const lostLeases =
  (reason: 'expired' | 'agent_offline', now: number): EndLease =>
  (lease) =>
    afterLostLease(lease, { reason, now });
