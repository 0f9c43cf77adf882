import { FleetError, notFound } from '../../domain/errors.js';
import type { TaskWithoutPayload, Task, TaskStatus } from '../../domain/types.js';
import type { TaskWrite } from '../../store/store.js';
import { endedByServer } from './control.js';

/** A new task waits as `scheduled` until its runAt; one due now is `queued` at once. */
export const initialStatus = (runAt: number, now: number): 'queued' | 'scheduled' => (runAt > now ? 'scheduled' : 'queued');

/** Statuses a task can be cancelled from: any unfinished one. */
export const CANCELLABLE: readonly TaskStatus[] = ['scheduled', 'queued', 'leased', 'waiting'];
/** Statuses a task can be retried from by hand: the two a task ends in without a result. */
export const RETRYABLE: readonly TaskStatus[] = ['dead', 'cancelled'];

/**
 * The task a write that needed the agent's lease wrote; when the store refused it, why: the task is
 * gone, or the agent does not hold its lease (any more).
 */
export function leaseHeld<T extends TaskWithoutPayload>(write: TaskWrite<T>, id: number, agentId: string): T {
  if (write.task) return write.task;
  const current = write.current;
  if (!current) throw notFound('task', id);
  // The agent's own attempt was ended by a cancel or its timeout: it is told so, with the reason.
  const ended = current.agentId === agentId ? endedByServer(current) : undefined;
  if (ended) throw new FleetError(ended.code, `task ${id}: ${ended.message}`, { taskId: id, status: current.status, reason: ended.message });
  throw new FleetError('FLEETD_ERR_LEASE_LOST', `agent ${agentId} does not hold the lease on task ${id}`, {
    taskId: id,
    status: current.status,
    holder: current.status === 'leased' ? current.agentId : null,
  });
}

/** The task a cancel or retry wrote; when the store refused it (the task is in another status), why. */
export function stateAllowed(write: TaskWrite, id: number, action: 'cancel' | 'retry'): Task {
  if (write.task) return write.task;
  const current = write.current;
  if (!current) throw notFound('task', id);
  const message =
    action === 'cancel'
      ? `task ${id} is ${current.status} and cannot be cancelled`
      : `task ${id} is ${current.status}; only dead or cancelled tasks can be retried`;
  throw new FleetError('FLEETD_ERR_TASK_STATE', message, { taskId: id, status: current.status });
}
