import type { NamespaceFilter } from '../domain/namespaces.js';
import type { Schedule } from '../domain/schedules.js';
import type { Page } from '../domain/types.js';

export interface ScheduleListParams {
  namespaces?: NamespaceFilter;
  limit: number;
  cursor?: string;
}

/** Recurring schedules, each named uniquely within its namespace. Which fires to submit, and when, is core's (core/rules/schedules.ts). */
export interface ScheduleStore {
  /** Stores a new schedule; undefined when its namespace has one of that name (nothing is changed then). */
  scheduleInsert(params: { schedule: Omit<Schedule, 'lastFireAt' | 'lastTaskId' | 'updatedAt'> }): Promise<Schedule | undefined>;
  scheduleGet(params: { namespace: string; name: string }): Promise<Schedule | undefined>;
  /** Oldest first. */
  scheduleList(params: ScheduleListParams): Promise<Page<Schedule>>;
  /** Deletes it; undefined when there was none. */
  scheduleDelete(params: { namespace: string; name: string }): Promise<Schedule | undefined>;
  /** Pauses or resumes it, with the next fire time core computed (undefined: no such schedule). */
  scheduleSetPaused(params: { namespace: string; name: string; paused: boolean; nextFireAt: number; now: number }): Promise<Schedule | undefined>;
  /** Active schedules of every namespace whose next fire time has come, earliest first. */
  scheduleDue(params: { now: number; limit: number }): Promise<Schedule[]>;
  /**
   * Moves a schedule on past the fires core handled, only if its next fire time is still `from`
   * (another node did not move it meanwhile, nor was it paused, resumed or deleted): whether it did.
   */
  scheduleAdvance(params: {
    namespace: string;
    name: string;
    from: number;
    nextFireAt: number;
    lastFireAt: number | null;
    lastTaskId: number | null;
    now: number;
  }): Promise<boolean>;
  /** The earliest next fire time of the active schedules, to set the timer. */
  scheduleNextFire(): Promise<number | null>;
}
