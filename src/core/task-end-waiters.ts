import type { HangUp } from './hang-up.js';

/**
 * Requests waiting for tasks to end (`GET /v1/tasks/:id?waitMs=`), by task id: the fleet wakes a
 * task's waiters on the events that end it (completed, dead, cancelled), from this node or, through
 * the bus, another. One map entry per waited task, whatever the number of events: a completion
 * costs a lookup, not a call per waiting request.
 */
export class TaskEndWaiters {
  private readonly byTask = new Map<number, Set<() => void>>();

  /** Requests waiting, over every task. */
  get waiting(): number {
    let n = 0;
    for (const waiting of this.byTask.values()) n += waiting.size;
    return n;
  }

  /** Wakes every request waiting for this task. */
  ended(id: number): void {
    const waiting = this.byTask.get(id);
    if (!waiting) return;
    this.byTask.delete(id);
    for (const wake of waiting) wake();
  }

  /** Wakes every waiting request (the fleet stops): each answers with the task as it is. */
  endAll(): void {
    const all = [...this.byTask.values()];
    this.byTask.clear();
    for (const waiting of all) for (const wake of waiting) wake();
  }

  /**
   * Starts watching a task before it is read, so that an end between the read and the wait is not
   * missed: `until` resolves when the task ends, after `ms`, or when `signal` aborts, whichever
   * comes first; `cancel` stops watching.
   */
  watch(id: number): { until(ms: number, signal?: HangUp): Promise<void>; cancel(): void } {
    let ended = false;
    let wake: () => void = () => (ended = true);
    const waiter = () => wake();
    let waiting = this.byTask.get(id);
    if (!waiting) this.byTask.set(id, (waiting = new Set()));
    waiting.add(waiter);
    const cancel = () => {
      const set = this.byTask.get(id);
      if (!set?.delete(waiter)) return;
      if (set.size === 0) this.byTask.delete(id);
    };
    return {
      cancel,
      until: (ms, signal) =>
        new Promise<void>((resolve) => {
          if (ended || signal?.aborted) return resolve();
          const done = () => {
            clearTimeout(timer);
            signal?.removeEventListener('abort', done);
            resolve();
          };
          const timer = setTimeout(done, ms);
          signal?.addEventListener('abort', done, { once: true });
          wake = done;
        }),
    };
  }
}
