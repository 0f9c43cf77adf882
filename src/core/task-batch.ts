import { FleetError, invalid } from '../domain/errors.js';
import type { TaskWithoutPayload } from '../domain/types.js';
import type { TaskUsage } from '../domain/type-policies.js';
import type { Logger } from './context.js';
import type { TaskService } from './tasks.js';

/** One item of an agent's batch: what a single complete, fail or extend would say. */
export type TaskBatchItem =
  | { op: 'complete'; id: number; result?: unknown; usage?: TaskUsage }
  | { op: 'fail'; id: number; error?: unknown; retryable?: boolean; usage?: TaskUsage }
  | { op: 'extend'; id: number; leaseMs?: number };

/** Each item's answer, in its place: the task after the write, or why the item was refused. */
export type TaskBatchOutcome = { id: number; task: TaskWithoutPayload; error?: undefined } | { id: number; task?: undefined; error: FleetError };

/**
 * An agent's completions, failures and extensions sent together (`POST /v1/tasks/complete`, a
 * `batch` message), each under the same rules as alone and answered on its own: a refused item
 * (lease lost, result too large) changes nothing and refuses no other.
 *
 * Every item's write is started in the same turn of the event loop, so that the store writes them
 * together: one group-commit transaction on SQLite, one statement per kind on PostgreSQL (its tick
 * batchers). A task named twice in one batch is refused the second time, since the order of two
 * writes to one task within one tick is not the same on every driver.
 */
export function settleBatch(tasks: TaskService, log: Logger, agentId: string, items: readonly TaskBatchItem[]): Promise<TaskBatchOutcome[]> {
  const named = new Set<number>();
  return Promise.all(
    items.map(async (item, index): Promise<TaskBatchOutcome> => {
      if (named.has(item.id)) {
        return { id: item.id, error: invalid(`items[${index}].id`, `task ${item.id} is named by an earlier item of this batch`, { index }) };
      }
      named.add(item.id);
      try {
        switch (item.op) {
          case 'complete':
            return { id: item.id, task: await tasks.complete({ id: item.id, agentId, result: item.result, usage: item.usage }) };
          case 'fail':
            return { id: item.id, task: await tasks.fail({ id: item.id, agentId, error: item.error, retryable: item.retryable, usage: item.usage }) };
          case 'extend':
            return { id: item.id, task: await tasks.extend({ id: item.id, agentId, leaseMs: item.leaseMs }) };
        }
      } catch (err) {
        if (err instanceof FleetError) return { id: item.id, error: err };
        log.error({ err, agentId, taskId: item.id }, 'batch item failed');
        return { id: item.id, error: new FleetError('FLEETD_ERR_INTERNAL', 'internal error; it has been logged') };
      }
    }),
  );
}
