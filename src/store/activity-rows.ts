import type { ActivityEntry, ActivityTotals, LogLevel } from '../domain/activity.js';
import type { ActivityAppendEntry } from './activity-store.js';

/** A row of task_activity, the same on both SQL drivers. */
export interface ActivityRow {
  task_id: number;
  seq: number;
  kind: ActivityEntry['kind'];
  mark: number;
  at: number;
  level: string | null;
  message: string | null;
  progress: number | null;
  text: string | null;
}

export interface ActivityTotalsRow {
  task_id: number;
  seq: number;
  progress: number;
  log_lines: number;
  output_bytes: number;
}

export const toActivityTotals = (row: ActivityTotalsRow | undefined): ActivityTotals =>
  row ? { seq: row.seq, progress: row.progress, logLines: row.log_lines, outputBytes: row.output_bytes } : { seq: 0, progress: 0, logLines: 0, outputBytes: 0 };

export function toActivityEntry(row: ActivityRow): ActivityEntry {
  const { seq, at } = row;
  if (row.kind === 'progress') return { seq, at, kind: 'progress', progress: row.progress ?? 0, message: row.message };
  if (row.kind === 'log') return { seq, at, kind: 'log', level: (row.level ?? 'info') as LogLevel, message: row.message ?? '' };
  return { seq, at, kind: 'output', text: row.text ?? '' };
}

/** The batch's additions to the totals, by kind. */
export function activityAdded(entries: ActivityAppendEntry[]): { progress: number; log: number; output: number } {
  const added = { progress: 0, log: 0, output: 0 };
  for (const { entry, size } of entries) added[entry.kind] += size;
  return added;
}

/**
 * The rows of a batch appended after `before` (the totals as they were): each entry's sequence
 * number and its mark (how much of its kind came before it).
 */
export function activityRows(id: number, entries: ActivityAppendEntry[], before: ActivityTotals, now: number): ActivityRow[] {
  const marks = { progress: before.progress, log: before.logLines, output: before.outputBytes };
  return entries.map(({ entry, size }, i) => {
    const mark = marks[entry.kind];
    marks[entry.kind] += size;
    return {
      task_id: id,
      seq: before.seq + i + 1,
      kind: entry.kind,
      mark,
      at: now,
      level: entry.kind === 'log' ? entry.level : null,
      message: entry.kind === 'output' ? null : entry.message,
      progress: entry.kind === 'progress' ? entry.progress : null,
      text: entry.kind === 'output' ? entry.text : null,
    };
  });
}
