import { DEFAULT_NAMESPACE } from '../domain/namespaces.js';
import { canClaim, namespaceOfKey, requirementsOf } from '../domain/requirements.js';

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

const NOBODY: ReadonlySet<ClaimWaiter> = new Set();

/**
 * Wakes waiting claims when tasks they can do appear, oldest waiter first, and only as many as the
 * new tasks can satisfy: a single task does not wake a thousand agents to race for it. A woken
 * waiter that stays registered (a push channel) goes to the back of the line, so that work spreads
 * over agents instead of filling the first.
 *
 * A notification walks as few waiters as it can:
 * - Only waiters that may want tasks stand in the line: one found wanting nothing (an agent busy
 *   with its last task, a socket out of credit) leaves it, and comes back at its end through
 *   `mayWant`. A fleet of ten thousand busy agents would otherwise be walked, and asked, for every
 *   task submitted while it is busy.
 * - The line is kept, in the same order, for each capability its waiters hold and for the `default`
 *   namespace's waiters, and a requirement is looked for in the shortest of the lines that hold
 *   everyone able to do it: a GPU task among the GPU agents, a task pinned to an agent in that
 *   agent's own line, a `default` task among `default`'s agents, not among every idle agent.
 * - A requirement that no waiter in the line can do (it needs two capabilities that no one agent
 *   has together, say) is remembered until a waiter able to do it joins the line, which is the only
 *   way one can come to be in it (a waiter's capabilities do not change).
 *
 * `generation` increases on every notification, so a claimer that found nothing can tell whether
 * tasks appeared between its claim and its registering here, and retry instead of sleeping on them.
 */
export class ClaimWaiters {
  private readonly waiters = new Set<ClaimWaiter>();
  /** The line: registered waiters that may want tasks, the longest waiting first. */
  private readonly line = new Set<ClaimWaiter>();
  /** The line's waiters holding each capability, in the line's order. */
  private readonly lineOf = new Map<string, Set<ClaimWaiter>>();
  /** The line's waiters of the `default` namespace, in the line's order: its tasks' keys name no namespace. */
  private readonly defaultLine = new Set<ClaimWaiter>();
  private readonly byAgent = new Map<string, Set<ClaimWaiter>>();
  /** Requirement keys that no waiter in the line can do, found by walking their candidates whole. */
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
      this.leave(waiter);
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
    this.enter(waiter);
    for (const key of this.unclaimable) if (canClaim(key, waiter.capabilities, waiter.namespace)) this.unclaimable.delete(key);
  }

  private enter(waiter: ClaimWaiter): void {
    this.line.add(waiter);
    if (waiter.namespace === DEFAULT_NAMESPACE) this.defaultLine.add(waiter);
    for (const capability of waiter.capabilities) {
      let line = this.lineOf.get(capability);
      if (!line) this.lineOf.set(capability, (line = new Set()));
      line.add(waiter);
    }
  }

  private leave(waiter: ClaimWaiter): void {
    if (!this.line.delete(waiter)) return;
    this.defaultLine.delete(waiter);
    for (const capability of waiter.capabilities) {
      const line = this.lineOf.get(capability);
      if (!line) continue;
      line.delete(waiter);
      if (line.size === 0) this.lineOf.delete(capability);
    }
  }

  /** The waiters that may do tasks of `key`, in the line's order: the shortest of the lines holding everyone able to (canClaim). */
  private candidatesFor(key: string): ReadonlySet<ClaimWaiter> {
    // Outside `default` the key holds its namespace's requirement, whose line is among those below.
    let shortest: ReadonlySet<ClaimWaiter> = namespaceOfKey(key) === DEFAULT_NAMESPACE ? this.defaultLine : this.line;
    for (const requirement of requirementsOf(key)) {
      const line = this.lineOf.get(requirement);
      if (!line) return NOBODY;
      if (line.size < shortest.size) shortest = line;
    }
    return shortest;
  }

  notify(byRequirement: Record<string, number>): void {
    this.generation++;
    const woken = new Map<ClaimWaiter, WakeReason>();
    for (const [key, count] of Object.entries(byRequirement)) {
      if (count <= 0 || this.unclaimable.has(key)) continue;
      let left = count;
      // Somebody in the line can do it: woken for it now, or for another requirement just before.
      let able = false;
      // Deleting the entry being visited (leave) leaves a Set's iteration on course.
      for (const waiter of this.candidatesFor(key)) {
        const want = waiter.want();
        if (want <= 0) {
          this.leave(waiter);
          continue;
        }
        if (!canClaim(key, waiter.capabilities, waiter.namespace)) continue;
        able = true;
        // Woken once a notification, for one requirement: another goes to the next waiter who can do it.
        if (woken.has(waiter)) continue;
        const taken = Math.min(want, left);
        woken.set(waiter, { key, count: taken });
        left -= taken;
        if (left <= 0) break;
      }
      if (!able) {
        // Pinned tasks each have a requirement of their own agent's: a bound, not every key seen.
        if (this.unclaimable.size >= UNCLAIMABLE_KEPT) this.unclaimable.clear();
        this.unclaimable.add(key);
      }
    }
    // Moved after the walks: a Set visits again an entry re-added while it is being iterated.
    for (const waiter of woken.keys()) {
      this.leave(waiter);
      this.enter(waiter);
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
