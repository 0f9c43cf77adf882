import { bulkApply, bulkCount } from '../bulk.js';
import { toTask, type TaskRow } from '../rows.js';
import type { TaskBulkStore, TaskTransition } from '../store.js';
import type { SqliteDatabase } from './database.js';

/** Bulk actions on tasks, in the SQLite driver: the statements of store/bulk.ts, in the group commit. */
export function sqliteBulk(d: SqliteDatabase, settleDependents: (finished: TaskRow[], now: number) => TaskTransition[]): TaskBulkStore {
  return {
    async taskBulkCount(params) {
      const { text, values } = bulkCount(params.filter, params.from, () => '?');
      return d.statement(text).get(...values) as { matched: number; eligible: number };
    },

    taskBulkApply(params) {
      const { text, values } = bulkApply({ ...params, error: JSON.stringify(params.error ?? null) }, () => '?');
      return d.groupCommit.write(() => {
        const rows = d.statement(text).all(...values) as TaskRow[];
        const released = params.action === 'cancel' ? settleDependents(rows, params.now) : [];
        return { tasks: rows.map(toTask).sort((a, b) => a.id - b.id), released };
      });
    },
  };
}
