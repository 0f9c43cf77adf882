import type { FleetContext } from '../context.js';
import { DeadlineService } from './deadline-service.js';

/**
 * Wakes the claims that a policy, a pause or held locks held back, when the hold may have ended: at
 * the time a hold that ends with time ends (a pause's end, the oldest start leaving a rate window),
 * when a lease ends (a concurrency slot freed, a task's locks gone) and when a lock is released.
 * Claims report what they held back (`record`); a wake-up announces as many of them as it may have
 * freed (one a lease end, all for the rest) and forgets those; a claim that is still held back
 * reports them again. Nothing is polled: this sleeps until the earliest such time.
 */
export class HeldTasks extends DeadlineService {
  private held = new Map<string, number>();
  private unsubscribe: (() => void)[] = [];

  constructor(private readonly ctx: FleetContext) {
    super('held-tasks', ctx.now, ctx.maintenance.maxSleepMs, ctx.onMaintenanceError);
  }

  /** A claim held back these queued tasks (by requirement key); one of the holds ends by itself at `retryAt`. */
  record(byRequirement: Record<string, number>, retryAt: number | null): void {
    for (const [key, n] of Object.entries(byRequirement)) this.held.set(key, Math.max(this.held.get(key) ?? 0, n));
    if (retryAt !== null) this.poke(retryAt);
  }

  override start(): void {
    super.start();
    // A lease that ends frees a slot of its type's (and key's) limit: one held task may go.
    for (const name of ['task.completed', 'task.failed', 'task.dead', 'task.cancelled', 'task.requeued'] as const) {
      this.unsubscribe.push(this.ctx.bus.subscribe(name, (e) => e.task.claimedAt !== null && this.wake(1)));
    }
    // A lock that goes may free a task whose locks it held.
    this.unsubscribe.push(this.ctx.bus.subscribe('lock.released', () => this.wake(Infinity)));
    // A lock request that leaves the line without its lock no longer keeps a task's locks from it.
    this.unsubscribe.push(this.ctx.bus.subscribe('locks.line', () => this.wake(Infinity)));
  }

  override stop(): void {
    super.stop();
    for (const off of this.unsubscribe) off();
    this.unsubscribe = [];
  }

  async runOnce(): Promise<{ more: boolean; next: number | null }> {
    this.wake(Infinity);
    return { more: false, next: null };
  }

  /**
   * Announces up to `most` held tasks of each requirement set, and forgets those: the rest stay
   * held, for the next lease end. Two leases ending in one turn free two slots, and announce two.
   */
  private wake(most: number): void {
    if (this.held.size === 0) return;
    const available: Record<string, number> = {};
    for (const [key, n] of this.held) {
      const announced = Math.min(n, most);
      available[key] = announced;
      if (announced === n) this.held.delete(key);
      else this.held.set(key, n - announced);
    }
    this.ctx.bus.publish('tasks.available', { byRequirement: available });
  }
}
