import type { ActivityEntry, ActivityInput, ActivityTail, ActivityTotals } from '../domain/activity.js';
import type { Task } from '../domain/types.js';

/** Where, after a write with these totals, each kind's retained tail starts (see core/rules/activity.ts). */
export type ActivityFloor = (totals: ActivityTotals) => { progress: number; log: number; output: number };

/** An entry to append, with what it counts against its kind's bound (a line, its bytes, a progress report). */
export interface ActivityAppendEntry {
  entry: ActivityInput;
  size: number;
}

/** A write that was made says the task's namespace too, which its event carries (streams filter by it). */
export type ActivityWrite =
  | { entries: ActivityEntry[]; totals: ActivityTotals; namespace: string; current?: undefined }
  | { entries: undefined; current: Task | undefined };

/**
 * The progress, log lines and output agents report on the tasks they hold, kept per task as a
 * bounded tail in the store (so that it survives restarts and any node can read it).
 */
export interface ActivityStore {
  /**
   * Appends the entries, in order, to a task leased to `agentId`, each with the next sequence number
   * of the task; then drops what lies below `floor` of the new totals. When the agent does not hold
   * the task, writes nothing and returns the task as it is (undefined: no such task), for core to say why.
   */
  taskActivityAppend(params: { id: number; agentId: string; entries: ActivityAppendEntry[]; now: number; floor: ActivityFloor }): Promise<ActivityWrite>;
  /** What is retained of the task's activity after sequence number `since`, at most `limit` entries. */
  taskActivityRead(params: { id: number; since: number; limit: number }): Promise<ActivityTail>;
}
