import { requirementsOf } from '../store/store.js';

/** Someone waiting for claimable tasks: a long-polling claim, or (later) a pushing socket with credit. */
export interface ClaimWaiter {
  capabilities: ReadonlySet<string>;
  /** How many tasks it would take now; 0 stops it being woken. */
  want(): number;
  /** Called at most once per notification; the waiter then tries to claim. */
  wake(): void;
}

/**
 * Wakes waiting claims when tasks they can do appear, oldest waiter first, and only as many as the
 * new tasks can satisfy: a single task does not wake a thousand agents to race for it.
 *
 * `generation` increases on every notification, so a claimer that found nothing can tell whether
 * tasks appeared between its claim and its registering here, and retry instead of sleeping on them.
 */
export class ClaimWaiters {
  private readonly waiters = new Set<ClaimWaiter>();
  private readonly requirementCache = new Map<string, string[]>();
  generation = 0;

  get size(): number {
    return this.waiters.size;
  }

  add(waiter: ClaimWaiter): () => void {
    this.waiters.add(waiter);
    return () => this.waiters.delete(waiter);
  }

  notify(byRequirement: Record<string, number>): void {
    this.generation++;
    const remaining = new Map<string[], number>();
    for (const [key, count] of Object.entries(byRequirement)) {
      if (count <= 0) continue;
      let reqs = this.requirementCache.get(key);
      if (!reqs) {
        reqs = requirementsOf(key);
        if (this.requirementCache.size > 10_000) this.requirementCache.clear();
        this.requirementCache.set(key, reqs);
      }
      remaining.set(reqs, count);
    }
    if (remaining.size === 0) return;
    const woken: ClaimWaiter[] = [];
    for (const waiter of this.waiters) {
      const want = waiter.want();
      if (want <= 0) continue;
      for (const [reqs, left] of remaining) {
        if (!reqs.every((c) => waiter.capabilities.has(c))) continue;
        woken.push(waiter);
        if (left - want <= 0) remaining.delete(reqs);
        else remaining.set(reqs, left - want);
        break;
      }
      if (remaining.size === 0) break;
    }
    for (const waiter of woken) waiter.wake();
  }
}
