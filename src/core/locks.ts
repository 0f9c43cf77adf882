import { randomUUID } from 'node:crypto';
import type { FleetContext } from './context.js';
import { FleetError, invalid, notFound } from '../domain/errors.js';
import type { LockExpirer } from './maintenance/lock-expirer.js';
import { badLockPath, decideLock, lockProbes, resourcesClash } from './rules/locks.js';
import type { LockHolder } from '../store/store.js';
import type { Lock, Page } from '../domain/types.js';

export interface LockInput {
  agentId: string;
  resources: string[];
  ttlMs: number;
  description?: string;
  /** Wait up to this long for resources held by others, in line behind earlier waiters; 0 or absent answers at once. */
  waitMs?: number;
}

/** A request waiting for its resources, in arrival order. */
interface LockWaiter {
  input: LockInput;
  resources: string[];
  conflicts: LockHolder[];
  timer: NodeJS.Timeout;
  signal?: AbortSignal;
  onAbort?: () => void;
  resolve(lock: Lock): void;
  reject(err: unknown): void;
}

const conflictError = (conflicts: LockHolder[]) =>
  new FleetError('FLEETD_ERR_LOCK_CONFLICT', `already locked: ${conflicts.map((c) => `${c.resource} (agent ${c.agentId})`).join(', ')}`, { conflicts });

/** Exclusive, all-or-nothing locks on named resources (files, URLs, anything), held by agents until released, expired or the agent goes offline. */
export class LockService {
  /**
   * Requests waiting for their resources, first come first served: a waiter is never passed by a
   * later one that wants any of the same resources (directories included). Each try takes every
   * resource or none, so waiters hold nothing while they wait and two cannot wait on each other.
   */
  private waiters: LockWaiter[] = [];
  private draining = false;
  private drainAgain = false;
  private unsubscribe: (() => void)[] = [];

  constructor(private readonly ctx: FleetContext, private readonly timers: { locks: LockExpirer }) {}

  /** Waiters look again whenever a lock goes (released, expired, its agent offline; other nodes' too, over a shared bus). */
  start(): void {
    this.unsubscribe.push(this.ctx.bus.subscribe('lock.released', () => void this.drain()));
  }

  /** Every waiting request answers: the node is stopping. */
  stop(): void {
    for (const off of this.unsubscribe) off();
    this.unsubscribe = [];
    for (const w of [...this.waiters]) this.settle(w, new FleetError('FLEETD_ERR_SHUTTING_DOWN', 'the server is shutting down'));
  }

  /** Takes the resources now, or with waitMs waits for them in line; a conflict at the end of the wait is a 409 as without it. */
  async acquire(input: LockInput, signal?: AbortSignal): Promise<Lock> {
    const resources = await this.check(input);
    // A request that waits joins the line behind earlier waiters for the same resources; one that
    // does not wait only tries.
    const blocked = !!input.waitMs && this.waiters.some((w) => w.resources.some((r) => resources.some((mine) => resourcesClash(r, mine))));
    const first = blocked ? undefined : await this.tryAcquire(input, resources);
    if (first && 'id' in first) return first;
    if (!input.waitMs) throw conflictError(first ?? []);
    return new Promise<Lock>((resolve, reject) => {
      const waiter: LockWaiter = {
        input,
        resources,
        conflicts: first ?? [],
        resolve,
        reject,
        signal,
        timer: setTimeout(() => this.settle(waiter, conflictError(waiter.conflicts.length > 0 ? waiter.conflicts : this.waitersConflicts(resources))), input.waitMs),
      };
      waiter.timer.unref();
      if (signal) {
        waiter.onAbort = () => this.settle(waiter, new FleetError('FLEETD_ERR_REQUEST_TIMEOUT', 'the client stopped waiting'));
        signal.addEventListener('abort', waiter.onAbort, { once: true });
      }
      this.waiters.push(waiter);
      // A lock may have gone between the try and joining the line.
      void this.drain();
    });
  }

  /** For a waiter that never got to try (earlier waiters were in its way): the holders those waiters met. */
  private waitersConflicts(resources: string[]): LockHolder[] {
    return this.waiters.flatMap((w) => w.conflicts).filter((c) => resources.some((r) => resourcesClash(r, c.resource)));
  }

  private settle(waiter: LockWaiter, outcome: Lock | Error): void {
    const at = this.waiters.indexOf(waiter);
    if (at < 0) return;
    this.waiters.splice(at, 1);
    clearTimeout(waiter.timer);
    if (waiter.onAbort) waiter.signal?.removeEventListener('abort', waiter.onAbort);
    if (outcome instanceof Error) waiter.reject(outcome);
    else waiter.resolve(outcome);
    // A waiter that leaves the line (timed out, gave up) may have been in the way of later ones.
    if (outcome instanceof Error) void this.drain();
  }

  /** Tries the waiters in order; one that fails, or is behind one that wants the same resources, keeps its place. */
  private async drain(): Promise<void> {
    if (this.draining) {
      this.drainAgain = true;
      return;
    }
    this.draining = true;
    try {
      do {
        this.drainAgain = false;
        const inTheWay: string[] = [];
        for (const waiter of [...this.waiters]) {
          if (!this.waiters.includes(waiter)) continue;
          if (waiter.resources.some((r) => inTheWay.some((earlier) => resourcesClash(r, earlier)))) {
            inTheWay.push(...waiter.resources);
            continue;
          }
          const got = await this.tryAcquire(waiter.input, waiter.resources).catch((err: unknown) => err as Error);
          if (got instanceof Error || 'id' in got) this.settle(waiter, got);
          else {
            waiter.conflicts = got;
            inTheWay.push(...waiter.resources);
          }
        }
      } while (this.drainAgain);
    } finally {
      this.draining = false;
    }
  }

  /** Validates a request: the resources it takes, deduplicated. */
  private async check(input: LockInput): Promise<string[]> {
    if (input.ttlMs > this.ctx.config.maxLockTtlMs) {
      throw invalid('ttlMs', `is over the limit of ${this.ctx.config.maxLockTtlMs} ms`, { max: this.ctx.config.maxLockTtlMs });
    }
    input.resources.forEach((resource, index) => {
      const bad = badLockPath(resource);
      if (bad) throw invalid('resources', `${JSON.stringify(resource)} ${bad}`, { index });
    });
    const resources = [...new Set(input.resources)];
    const agent = await this.ctx.store.agentGet({ id: input.agentId });
    if (!agent) throw notFound('agent', input.agentId);
    if (agent.status === 'offline') {
      throw new FleetError('FLEETD_ERR_AGENT_OFFLINE', `agent ${input.agentId} is offline; heartbeat before taking locks`, {
        agentId: input.agentId,
      });
    }
    return resources;
  }

  /** One all-or-nothing try: the lock, or the holders in the way. */
  private async tryAcquire(input: LockInput, resources: string[]): Promise<Lock | LockHolder[]> {
    const now = this.ctx.now();
    const result = await this.ctx.store.lockAcquire({
      id: randomUUID(),
      agentId: input.agentId,
      resources,
      ttlMs: input.ttlMs,
      description: input.description ?? '',
      now,
      decide: (holders) => decideLock(holders, now),
      probes: lockProbes(resources),
    });
    if (!result.acquired) {
      // A holder's expiry frees its resources: the expirer's release wakes the line then.
      for (const c of result.conflicts) this.timers.locks.poke(c.expiresAt);
      return result.conflicts;
    }
    this.ctx.bus.publish('lock.acquired', { lock: result.lock });
    this.timers.locks.poke(result.lock.expiresAt);
    return result.lock;
  }

  async release(id: string, agentId?: string): Promise<Lock> {
    const release = await this.ctx.store.lockRelease({ id, holder: agentId });
    const lock = release.released;
    if (!lock) {
      if (release.current) throw new FleetError('FLEETD_ERR_FORBIDDEN', `lock ${id} is held by another agent`, { lockId: id });
      throw notFound('lock', id);
    }
    this.ctx.bus.publish('lock.released', { lock, reason: 'released' });
    return lock;
  }

  /** Moves the lock's expiry to ttlMs from now; an agent renews only its own locks. */
  async renew(id: string, ttlMs: number, agentId?: string): Promise<Lock> {
    if (ttlMs > this.ctx.config.maxLockTtlMs) {
      throw invalid('ttlMs', `is over the limit of ${this.ctx.config.maxLockTtlMs} ms`, { max: this.ctx.config.maxLockTtlMs });
    }
    const now = this.ctx.now();
    const renewal = await this.ctx.store.lockRenew({ id, holder: agentId, expiresAt: now + ttlMs, now });
    const lock = renewal.renewed;
    if (!lock) {
      // A lapsed lock the expirer has not reached yet is gone all the same: renewing cannot revive it.
      if (renewal.current && renewal.current.expiresAt > now) throw new FleetError('FLEETD_ERR_FORBIDDEN', `lock ${id} is held by another agent`, { lockId: id });
      throw notFound('lock', id);
    }
    this.timers.locks.poke(lock.expiresAt);
    return lock;
  }

  async get(id: string): Promise<Lock> {
    const lock = await this.ctx.store.lockGet({ id });
    if (!lock) throw notFound('lock', id);
    return lock;
  }

  list(params: { agentId?: string; limit: number; cursor?: string }): Promise<Page<Lock>> {
    return this.ctx.store.lockList(params);
  }
}
