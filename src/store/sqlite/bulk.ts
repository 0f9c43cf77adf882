import { bulkApply, bulkCount } from '../bulk.js';
import { toTask, type TaskRow } from '../rows.js';
import type { TaskBulkStore, TaskTransition } from '../store.js';
import type { SqliteDatabase } from './database.js';

/** Bulk actions on tasks, in the SQLite driver: the statements of store/bulk.ts, in the group commit. */
export function sqliteBulk(d: SqliteDatabase, settleDependents: (finished: TaskRow[], now: number) => TaskTransition[]): TaskBulkStore {
  const longPayloadsOf = (ids: { text: string; values: unknown[] }): Map<number, string> => {
    const rows = d.statement(`SELECT task_id, payload FROM task_payloads WHERE task_id IN (${ids.text})`).all(...ids.values) as { task_id: number; payload: string }[];
    return new Map(rows.map((r) => [r.task_id, r.payload]));
  };
  return {
    async taskBulkCount(params) {
      const { text, values } = bulkCount(params.filter, params.from, () => '?');
      return d.statement(text).get(...values) as { matched: number; eligible: number };
    },

    taskBulkApply(params) {
      const { text, values, chosen } = bulkApply({ ...params, error: JSON.stringify(params.error ?? null) }, () => '?');
      return d.groupCommit.write(() => {
        // A deleted task's long payload goes with it, before the delete's rows are answered: read first.
        const payloads = params.action === 'delete' ? longPayloadsOf(chosen) : undefined;
        const rows = d.statement(text).all(...values) as TaskRow[];
        const released = params.action === 'cancel' ? settleDependents(rows, params.now) : [];
        return { tasks: rows.map((row) => toTask(d.withPayload(row, payloads))).sort((a, b) => a.id - b.id), released };
      });
    },
  };
}
