/** Recurring schedules: a cron expression that submits a task at each fire time. Times are epoch ms. */

/** When the previous fire's task is still unfinished at the next fire: skip that fire, or submit anyway. */
export type ScheduleOverlap = 'skip' | 'allow';
export const SCHEDULE_OVERLAPS: readonly ScheduleOverlap[] = ['skip', 'allow'];

/** Fires missed while no node ran (or fired in time): none, the latest of them, or all (bounded). */
export type ScheduleCatchUp = 'none' | 'latest' | 'all';
export const SCHEDULE_CATCH_UPS: readonly ScheduleCatchUp[] = ['none', 'latest', 'all'];

export interface Schedule {
  /** Its name is unique within it, and every task it fires goes to it. */
  namespace: string;
  name: string;
  /** Five fields, or six with seconds first. */
  cron: string;
  /** An IANA time zone the cron expression is read in. */
  timezone: string;
  /** The task each fire submits, as POST /v1/tasks takes it (without runAt, delayMs, idempotencyKey). */
  task: Record<string, unknown>;
  overlap: ScheduleOverlap;
  catchUp: ScheduleCatchUp;
  paused: boolean;
  /** The next fire time not yet submitted. */
  nextFireAt: number;
  lastFireAt: number | null;
  /** The task the last fire submitted. */
  lastTaskId: number | null;
  createdAt: number;
  updatedAt: number;
}
