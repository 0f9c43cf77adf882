import { FleetError, notFound } from '../../domain/errors.js';
import type { ActivityInput, ActivityTotals } from '../../domain/activity.js';
import { TERMINAL_STATUSES, type Task } from '../../domain/types.js';

/** How much of a task's activity is retained: the newest of each kind, counted in its own unit. */
export interface ActivityBounds {
  /** Log lines kept. */
  logLines: number;
  /** Bytes of output kept (UTF-8), in whole chunks. */
  outputBytes: number;
}

/** What an entry counts against its kind's bound: one line, its bytes of output, one progress (only the latest is kept). */
export const entrySize = (entry: ActivityInput): number => (entry.kind === 'output' ? Buffer.byteLength(entry.text, 'utf8') : 1);

/**
 * Each entry is written with its `mark`: how much of its kind came before it (lines, bytes,
 * progress reports). After a write with these totals, entries whose mark lies below the floor of
 * their kind are dropped: what remains is the newest `bounds` of each kind, and one progress.
 */
export function retainedFloor(totals: ActivityTotals, bounds: ActivityBounds): { progress: number; log: number; output: number } {
  return {
    progress: totals.progress - 1,
    log: totals.logLines - bounds.logLines,
    output: totals.outputBytes - bounds.outputBytes,
  };
}

/**
 * Why an agent's report on a task was refused, from the task as it is: gone (404), finished or
 * cancelled (409 FLEETD_ERR_TASK_STATE with its status: nobody holds it any more), or held by
 * another agent or by none (409 FLEETD_ERR_LEASE_LOST, as for a completion).
 */
export function activityRefused(current: Task | undefined, id: number, agentId: string): FleetError {
  if (!current) return notFound('task', id);
  if (TERMINAL_STATUSES.has(current.status)) {
    return new FleetError('FLEETD_ERR_TASK_STATE', `task ${id} is ${current.status}: it takes no more progress, logs or output`, {
      taskId: id,
      status: current.status,
    });
  }
  return new FleetError('FLEETD_ERR_LEASE_LOST', `agent ${agentId} does not hold the lease on task ${id}`, {
    taskId: id,
    status: current.status,
    holder: current.status === 'leased' ? current.agentId : null,
  });
}
