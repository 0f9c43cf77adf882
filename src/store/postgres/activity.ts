import type { ActivityEntry } from '../../domain/activity.js';
import { activityAdded, activityRows, toActivityEntry, toActivityTotals, type ActivityRow, type ActivityTotalsRow } from '../activity-rows.js';
import type { ActivityStore } from '../activity-store.js';
import { toTask, type TaskRow } from '../rows.js';
import { prepared, type PostgresDatabase } from './database.js';

const holder = prepared('activity_holder', 'SELECT * FROM tasks WHERE id = $1 FOR SHARE');
const totals = prepared(
  'activity_totals',
  `INSERT INTO task_activity_totals AS t (task_id, seq, progress, log_lines, output_bytes) VALUES ($1, $2, $3, $4, $5)
   ON CONFLICT (task_id) DO UPDATE SET seq = t.seq + excluded.seq, progress = t.progress + excluded.progress,
     log_lines = t.log_lines + excluded.log_lines, output_bytes = t.output_bytes + excluded.output_bytes
   RETURNING *`,
);
const insert = prepared(
  'activity_insert',
  `INSERT INTO task_activity (task_id, seq, kind, mark, at, level, message, progress, text)
   SELECT $1, u.seq, u.kind, u.mark, $2, u.level, u.message, u.progress, u.text
   FROM unnest($3::bigint[], $4::text[], $5::bigint[], $6::text[], $7::text[], $8::float8[], $9::text[]) AS u(seq, kind, mark, level, message, progress, text)`,
);
const trim = prepared(
  'activity_trim',
  `DELETE FROM task_activity WHERE task_id = $1 AND (
     (kind = 'progress' AND mark < $2) OR (kind = 'log' AND mark < $3) OR (kind = 'output' AND mark < $4))`,
);

/**
 * The task activity area of the PostgreSQL driver: one short transaction per batch of entries (the
 * SDK sends a task's reports of one tick as one batch). The task's row is read FOR SHARE, so that a
 * completion or cancel committing meanwhile waits for the batch: what was accepted came before it.
 */
export function postgresActivity(db: PostgresDatabase): ActivityStore {
  return {
    taskActivityAppend({ id, agentId, entries, now, floor }) {
      return db.transaction(async (q) => {
        const [task] = await q<TaskRow>(holder, [id]);
        if (!task || task.status !== 'leased' || task.agent_id !== agentId) return { entries: undefined, current: task && toTask(task) };
        const added = activityAdded(entries);
        const [row] = await q<ActivityTotalsRow>(totals, [id, entries.length, added.progress, added.log, added.output]);
        const after = toActivityTotals(row);
        const before = {
          seq: after.seq - entries.length,
          progress: after.progress - added.progress,
          logLines: after.logLines - added.log,
          outputBytes: after.outputBytes - added.output,
        };
        const rows = activityRows(id, entries, before, now);
        await q(insert, [
          id,
          now,
          rows.map((r) => r.seq),
          rows.map((r) => r.kind),
          rows.map((r) => r.mark),
          rows.map((r) => r.level),
          rows.map((r) => r.message),
          rows.map((r) => r.progress),
          rows.map((r) => r.text),
        ]);
        const bounds = floor(after);
        await q(trim, [id, bounds.progress, bounds.log, bounds.output]);
        return { entries: rows.map(toActivityEntry), totals: after, namespace: task.namespace };
      });
    },

    async taskActivityRead({ id, since, limit }) {
      const [totalsRow] = await db.query<ActivityTotalsRow>('SELECT * FROM task_activity_totals WHERE task_id = $1', [id]);
      const [progressRow] = await db.query<ActivityRow>("SELECT * FROM task_activity WHERE task_id = $1 AND kind = 'progress' ORDER BY seq DESC LIMIT 1", [id]);
      const rows = await db.query<ActivityRow>('SELECT * FROM task_activity WHERE task_id = $1 AND seq > $2 ORDER BY seq LIMIT $3', [id, since, limit + 1]);
      return {
        totals: toActivityTotals(totalsRow),
        progress: progressRow ? (toActivityEntry(progressRow) as Extract<ActivityEntry, { kind: 'progress' }>) : null,
        entries: rows.slice(0, limit).map(toActivityEntry),
        more: rows.length > limit,
      };
    },
  };
}
