import type { Schedule } from '../domain/schedules.js';
import type { Page } from '../domain/types.js';

/** Recurring schedules. Which fires to submit, and when, is core's (core/rules/schedules.ts). */
export interface ScheduleStore {
  /** Stores a new schedule; undefined when the name is taken (nothing is changed then). */
  scheduleInsert(params: { schedule: Omit<Schedule, 'lastFireAt' | 'lastTaskId' | 'updatedAt'> }): Promise<Schedule | undefined>;
  scheduleGet(params: { name: string }): Promise<Schedule | undefined>;
  /** Oldest first. */
  scheduleList(params: { limit: number; cursor?: string }): Promise<Page<Schedule>>;
  /** Deletes it; undefined when there was none. */
  scheduleDelete(params: { name: string }): Promise<Schedule | undefined>;
  /** Pauses or resumes it, with the next fire time core computed (undefined: no such schedule). */
  scheduleSetPaused(params: { name: string; paused: boolean; nextFireAt: number; now: number }): Promise<Schedule | undefined>;
  /** Active schedules whose next fire time has come, earliest first. */
  scheduleDue(params: { now: number; limit: number }): Promise<Schedule[]>;
  /**
   * Moves a schedule on past the fires core handled, only if its next fire time is still `from`
   * (another node did not move it meanwhile, nor was it paused, resumed or deleted): whether it did.
   */
  scheduleAdvance(params: { name: string; from: number; nextFireAt: number; lastFireAt: number | null; lastTaskId: number | null; now: number }): Promise<boolean>;
  /** The earliest next fire time of the active schedules, to set the timer. */
  scheduleNextFire(): Promise<number | null>;
}
