import { invalid } from '../../domain/errors.js';
import type { TaskStatus } from '../../domain/types.js';
import type { TaskBulkFilter } from '../../store/store.js';
import { CANCELLABLE, RETRYABLE } from './tasks.js';

export type BulkAction = 'retry' | 'cancel' | 'delete';

/** Statuses a task can be deleted from: the finished ones (a running task is cancelled first). */
export const DELETABLE: readonly TaskStatus[] = ['completed', 'dead', 'cancelled'];

/** The statuses each bulk action applies to; a matching task in another status is left as it is. */
export const bulkFrom = (action: BulkAction): readonly TaskStatus[] => ({ retry: RETRYABLE, cancel: CANCELLABLE, delete: DELETABLE })[action];

/**
 * A bulk action's filter. Without one it would touch every task: that is refused, unless the
 * caller says `filter: {}` on purpose.
 */
export function bulkFilter(filter: TaskBulkFilter | undefined): TaskBulkFilter {
  if (filter === undefined) {
    throw invalid('filter', 'is missing: refusing to touch every task; send filter: {} to mean every task on purpose');
  }
  return filter;
}
