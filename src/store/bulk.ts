import { whereOf, type Placeholder } from './keyset.js';
import type { TaskBulkApplyParams, TaskBulkFilter } from './store.js';
import type { TaskStatus } from '../domain/types.js';

/**
 * The statements of bulk actions on tasks (`POST /v1/tasks/bulk`), written once for both dialects
 * as lists.ts writes the lists: a driver only numbers the placeholders and runs them.
 */

function filterWhere(filter: TaskBulkFilter): { conditions: string[]; values: unknown[] } {
  return whereOf([
    ['namespace IN (?)', filter.namespaces],
    ['status = ?', filter.status],
    ['type = ?', filter.type],
    ['created_at < ?', filter.createdBefore],
    ['id IN (SELECT task_id FROM task_tags WHERE tag = ?)', filter.tag],
  ]);
}

const inList = (statuses: readonly TaskStatus[]) => `status IN (${statuses.map(() => '?').join(', ')})`;

function numbered(text: string, placeholder: Placeholder): string {
  let n = 0;
  return text.replace(/\?/g, () => placeholder(++n));
}

/** How many tasks the filter matches, and how many of those are in one of `from`. */
export function bulkCount(filter: TaskBulkFilter, from: readonly TaskStatus[], placeholder: Placeholder): { text: string; values: unknown[] } {
  const where = filterWhere(filter);
  const text = `SELECT count(*) AS matched, coalesce(sum(CASE WHEN ${inList(from)} THEN 1 ELSE 0 END), 0) AS eligible FROM tasks${
    where.conditions.length > 0 ? ` WHERE ${where.conditions.join(' AND ')}` : ''
  }`;
  return { text: numbered(text, placeholder), values: [...from, ...where.values] };
}

/**
 * The action on up to `limit` matching tasks in one of `from`, lowest ids first, returning their
 * rows (as written; for a delete, as they were). The status is checked again on the row itself,
 * so that a task that moved on meanwhile is left alone. `lock` locks the chosen rows (PostgreSQL).
 * `chosen` is the query of the ids it acts on, for what a driver reads of them first.
 */
export function bulkApply(
  p: Omit<TaskBulkApplyParams, 'error'> & { error: string },
  placeholder: Placeholder,
  lock = '',
): { text: string; values: unknown[]; chosen: { text: string; values: unknown[] } } {
  const filter = filterWhere(p.filter);
  const chosen = `SELECT id FROM tasks WHERE ${[...filter.conditions, inList(p.from)].join(' AND ')} ORDER BY id LIMIT ?${lock}`;
  const chosenValues = [...filter.values, ...p.from, p.limit];
  const head =
    p.action === 'delete'
      ? { text: 'DELETE FROM tasks', values: [] as unknown[] }
      : p.action === 'cancel'
        ? { text: "UPDATE tasks SET status = 'cancelled', completed_at = ?, updated_at = ?, lease_expires_at = NULL, error = ?", values: [p.now, p.now, p.error] }
        : {
            text: "UPDATE tasks SET status = 'queued', attempts = 0, run_at = ?, updated_at = ?, completed_at = NULL, result = NULL, error = NULL, lease_expires_at = NULL",
            values: [p.now, p.now],
          };
  const text = `${head.text} WHERE id IN (${chosen}) AND ${inList(p.from)} RETURNING *`;
  return { text: numbered(text, placeholder), values: [...head.values, ...chosenValues, ...p.from], chosen: { text: numbered(chosen, placeholder), values: chosenValues } };
}
