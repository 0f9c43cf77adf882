/**
 * What an agent reports about a task while it runs: its progress, log lines and chunks of output
 * (an LLM's tokens). Each entry takes the next sequence number of its task, assigned by the store in
 * the write that keeps it, so that every node and every reader sees one order.
 */
export type ActivityKind = 'progress' | 'log' | 'output';
export const LOG_LEVELS = ['debug', 'info', 'warn', 'error'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export type ActivityEntry =
  | { seq: number; at: number; kind: 'progress'; progress: number; message: string | null }
  | { seq: number; at: number; kind: 'log'; level: LogLevel; message: string }
  | { seq: number; at: number; kind: 'output'; text: string };

/** An entry as core hands it to the store: no sequence number or time yet. */
export type ActivityInput =
  | { kind: 'progress'; progress: number; message: string | null }
  | { kind: 'log'; level: LogLevel; message: string }
  | { kind: 'output'; text: string };

/** How much of each kind a task has had reported, ever (the retained tail may be shorter). */
export interface ActivityTotals {
  /** The last sequence number given out. */
  seq: number;
  progress: number;
  logLines: number;
  outputBytes: number;
}

/** What is retained of a task's activity after `since`: its latest progress, then its log and output in order. */
export interface ActivityTail {
  totals: ActivityTotals;
  /** The latest progress (whatever `since` is), or null when none was reported. */
  progress: Extract<ActivityEntry, { kind: 'progress' }> | null;
  entries: ActivityEntry[];
  /** More entries after the last one returned (the read's limit was reached). */
  more: boolean;
}
