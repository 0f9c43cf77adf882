import { canClaim } from '../domain/requirements.js';

/** Which new tasks a waiter was woken for: it is counted against `count` tasks of requirement `key`. */
export interface WakeReason {
  key: string;
  count: number;
}

/** Someone waiting for claimable tasks: a long-polling claim, or a pushing socket with credit. */
export interface ClaimWaiter {
  /** The agent it claims for, so that it can be woken when that agent's own leases end and free room. */
  agentId?: string;
  /** Its agent's claim keys (claimKeysOf) and namespace: it is woken for the requirement keys canClaim lets it take. */
  capabilities: ReadonlySet<string>;
  namespace: string;
  /**
   * How many tasks it would take now; 0 keeps it asleep whatever appears. A waiter found wanting
   * nothing leaves the line of those considered for new tasks, and its owner puts it back with
   * `ClaimWaiters.mayWant` whenever this may have risen.
   */
  want(): number;
  /**
   * The waiter should try to claim now. `reason` is set when new tasks woke it; it is absent when
   * its agent's room changed. A waiter whose claim then takes fewer of the tasks it was counted for
   * must hand the shortfall on with `notify`, or those tasks wait unseen (the hand-on rule, kept in
   * core/delivery.ts, the only user).
   */
  wake(reason?: WakeReason): void;
}

/**
 * The most requirement keys remembered as unclaimable at once. Each waiter joining the line is
 * checked against them all (about 2 µs for 64); past the bound they are forgotten together, and
 * found again by walking the line.
 */
const UNCLAIMABLE_KEPT = 64;

/**
 * Wakes waiting claims when tasks they can do appear, oldest waiter first, and only as many as the
 * new tasks can satisfy: a single task does not wake a thousand agents to race for it. A woken
 * waiter that stays registered (a push channel) goes to the back of the line, so that work spreads
 * over agents instead of filling the first.
 *
 * Only waiters that may want tasks stand in the line a notification walks: one found wanting
 * nothing (an agent busy with its last task, a socket out of credit) leaves it, and comes back at
 * its end through `mayWant`. A fleet of ten thousand busy agents would otherwise be walked, and
 * asked, for every task submitted while it is busy.
 *
 * Nor is the line walked again for a requirement that no waiter in it can do (the GPU tasks of a
 * fleet whose GPU agents are all busy, while the others idle): such a requirement is remembered
 * until a waiter able to do it joins the line, which is the only way one can come to be in it (a
 * waiter's capabilities do not change).
 *
 * `generation` increases on every notification, so a claimer that found nothing can tell whether
 * tasks appeared between its claim and its registering here, and retry instead of sleeping on them.
 */
export class ClaimWaiters {
  private readonly waiters = new Set<ClaimWaiter>();
  /** The line: registered waiters that may want tasks, the longest waiting first. */
  private readonly line = new Set<ClaimWaiter>();
  private readonly byAgent = new Map<string, Set<ClaimWaiter>>();
  /** Requirement keys that no waiter in the line can do, found by walking it whole. */
  private readonly unclaimable = new Set<string>();
  generation = 0;

  get size(): number {
    return this.waiters.size;
  }

  add(waiter: ClaimWaiter): () => void {
    this.waiters.add(waiter);
    if (waiter.want() > 0) this.join(waiter);
    const agentId = waiter.agentId;
    if (agentId !== undefined) {
      let set = this.byAgent.get(agentId);
      if (!set) this.byAgent.set(agentId, (set = new Set()));
      set.add(waiter);
    }
    return () => {
      this.waiters.delete(waiter);
      this.line.delete(waiter);
      if (agentId === undefined) return;
      const set = this.byAgent.get(agentId);
      set?.delete(waiter);
      if (set?.size === 0) this.byAgent.delete(agentId);
    };
  }

  /** The waiter's want may have risen (it was granted credit, or its claim ended): back in the line, at its end, if it wants tasks. */
  mayWant(waiter: ClaimWaiter): void {
    if (!this.line.has(waiter) && this.waiters.has(waiter) && waiter.want() > 0) this.join(waiter);
  }

  private join(waiter: ClaimWaiter): void {
    this.line.add(waiter);
    for (const key of this.unclaimable) if (canClaim(key, waiter.capabilities, waiter.namespace)) this.unclaimable.delete(key);
  }

  notify(byRequirement: Record<string, number>): void {
    this.generation++;
    const remaining = new Map<string, number>();
    for (const [key, count] of Object.entries(byRequirement)) if (count > 0 && !this.unclaimable.has(key)) remaining.set(key, count);
    if (remaining.size === 0) return;
    // With one requirement, nobody woken means nobody in the line can do it (with several, a waiter
    // counted for one may have been able to do another).
    const only = remaining.size === 1 ? [...remaining.keys()][0] : undefined;
    const woken: [ClaimWaiter, WakeReason][] = [];
    for (const waiter of this.line) {
      const want = waiter.want();
      if (want <= 0) {
        // Deleting the entry being visited leaves a Set's iteration on course.
        this.line.delete(waiter);
        continue;
      }
      for (const [key, left] of remaining) {
        if (!canClaim(key, waiter.capabilities, waiter.namespace)) continue;
        const count = Math.min(want, left);
        woken.push([waiter, { key, count }]);
        if (left - count <= 0) remaining.delete(key);
        else remaining.set(key, left - count);
        break;
      }
      if (remaining.size === 0) break;
    }
    if (only !== undefined && woken.length === 0) {
      // Pinned tasks each have a requirement of their own agent's: a bound, not every key seen.
      if (this.unclaimable.size >= UNCLAIMABLE_KEPT) this.unclaimable.clear();
      this.unclaimable.add(only);
    }
    // Moved after the loop: a Set visits again an entry re-added while it is being iterated.
    for (const [waiter] of woken) {
      this.line.delete(waiter);
      this.line.add(waiter);
    }
    for (const [waiter, reason] of woken) waiter.wake(reason);
  }

  /** The agent's room changed (one of its leases ended): its waiters look again. */
  wakeAgent(agentId: string): void {
    const set = this.byAgent.get(agentId);
    if (!set) return;
    for (const waiter of [...set]) waiter.wake();
  }
}
