import { bulkApply, bulkCount } from '../bulk.js';
import { toTask, type TaskRow } from '../rows.js';
import type { TaskBulkStore, TaskTransition } from '../store.js';
import type { PostgresDatabase, Query } from './database.js';

/** Bulk actions on tasks, in the PostgreSQL driver: the statements of store/bulk.ts, one statement per chunk. */
export function postgresBulk(db: PostgresDatabase, settleDependents: (q: Query, finished: TaskRow[], now: number) => Promise<TaskTransition[]>): TaskBulkStore {
  return {
    async taskBulkCount(params) {
      const { text, values } = bulkCount(params.filter, params.from, (n) => `$${n}`);
      const [row] = await db.query<{ matched: number; eligible: number }>(text, values);
      return { matched: Number(row.matched), eligible: Number(row.eligible) };
    },

    async taskBulkApply(params) {
      // FOR UPDATE: a claim or a completion of one of the chosen rows goes first or waits, and the
      // status is checked again on the row as it is then.
      const { text, values } = bulkApply({ ...params, error: JSON.stringify(params.error ?? null) }, (n) => `$${n}`, ' FOR UPDATE');
      if (params.action !== 'cancel') return { tasks: (await db.query<TaskRow>(text, values)).map(toTask).sort((a, b) => a.id - b.id), released: [] };
      // In one transaction with the release of what waited on the cancelled tasks.
      return db.transaction(async (q) => {
        const rows = await q<TaskRow>(text, values);
        return { tasks: rows.map(toTask).sort((a, b) => a.id - b.id), released: await settleDependents(q, rows, params.now) };
      });
    },
  };
}
