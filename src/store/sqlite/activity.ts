import type { ActivityEntry } from '../../domain/activity.js';
import { activityAdded, activityRows, toActivityEntry, toActivityTotals, type ActivityRow, type ActivityTotalsRow } from '../activity-rows.js';
import type { ActivityStore } from '../activity-store.js';
import { toTask, type TaskRow } from '../rows.js';
import type { SqliteDatabase } from './database.js';

/** The task activity area of the SQLite driver: one group-committed write per batch of entries. */
export function sqliteActivity(d: SqliteDatabase): ActivityStore {
  const { db, groupCommit } = d;
  const s = {
    holder: db.prepare("SELECT namespace FROM tasks WHERE id = ? AND status = 'leased' AND agent_id = ?").pluck(),
    task: d.taskRows('SELECT * FROM tasks WHERE id = ?'),
    totals: db.prepare(`INSERT INTO task_activity_totals (task_id, seq, progress, log_lines, output_bytes)
        VALUES (@id, @seq, @progress, @log, @output)
      ON CONFLICT (task_id) DO UPDATE SET seq = seq + excluded.seq, progress = progress + excluded.progress,
        log_lines = log_lines + excluded.log_lines, output_bytes = output_bytes + excluded.output_bytes
      RETURNING *`),
    insert: db.prepare(`INSERT INTO task_activity (task_id, seq, kind, mark, at, level, message, progress, text)
      VALUES (@task_id, @seq, @kind, @mark, @at, @level, @message, @progress, @text)`),
    trim: db.prepare('DELETE FROM task_activity WHERE task_id = ? AND kind = ? AND mark < ?'),
    readTotals: db.prepare('SELECT * FROM task_activity_totals WHERE task_id = ?'),
    latestProgress: db.prepare("SELECT * FROM task_activity WHERE task_id = ? AND kind = 'progress' ORDER BY seq DESC LIMIT 1"),
    after: db.prepare('SELECT * FROM task_activity WHERE task_id = ? AND seq > ? ORDER BY seq LIMIT ?'),
  };
  return {
    taskActivityAppend({ id, agentId, entries, now, floor }) {
      return groupCommit.write(() => {
        const namespace = s.holder.get(id, agentId) as string | undefined;
        if (namespace === undefined) {
          const row = s.task.get(id) as TaskRow | undefined;
          return { entries: undefined, current: row && toTask(row) };
        }
        const added = activityAdded(entries);
        const row = s.totals.get({ id, seq: entries.length, progress: added.progress, log: added.log, output: added.output }) as ActivityTotalsRow;
        const totals = toActivityTotals(row);
        const before = {
          seq: totals.seq - entries.length,
          progress: totals.progress - added.progress,
          logLines: totals.logLines - added.log,
          outputBytes: totals.outputBytes - added.output,
        };
        const rows = activityRows(id, entries, before, now);
        for (const r of rows) s.insert.run(r);
        const bounds = floor(totals);
        for (const kind of ['progress', 'log', 'output'] as const) if (added[kind] > 0) s.trim.run(id, kind, bounds[kind]);
        return { entries: rows.map(toActivityEntry), totals, namespace };
      });
    },

    async taskActivityRead({ id, since, limit }) {
      const totals = toActivityTotals(s.readTotals.get(id) as ActivityTotalsRow | undefined);
      const progressRow = s.latestProgress.get(id) as ActivityRow | undefined;
      const rows = s.after.all(id, since, limit + 1) as ActivityRow[];
      return {
        totals,
        progress: progressRow ? (toActivityEntry(progressRow) as Extract<ActivityEntry, { kind: 'progress' }>) : null,
        entries: rows.slice(0, limit).map(toActivityEntry),
        more: rows.length > limit,
      };
    },
  };
}
