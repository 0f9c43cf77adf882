import { randomUUID } from 'node:crypto';
import type { FleetContext } from './context.js';
import { FleetError, invalid, isDependencyUnavailable, notFound } from '../domain/errors.js';
import type { LockExpirer } from './maintenance/lock-expirer.js';
import { LAST_IN_LINE, badLockPath, decideLock, lockProbes, placeInLine, resourcesClash } from './rules/locks.js';
import type { LockHolder, LockListParams, LockWaiter as StoredWaiter } from '../store/store.js';
import type { Lock, Page } from '../domain/types.js';

export interface LockInput {
  /**
   * Where the lock is taken: only locks and waiting requests of this namespace are in its way. An
   * agent locks in its own namespace only: absent, it is the agent's; another is the 404 of a
   * missing agent.
   */
  namespace?: string;
  agentId: string;
  resources: string[];
  ttlMs: number;
  description?: string;
  /** Wait up to this long for resources held by others, in line behind earlier waiters; 0 or absent answers at once. */
  waitMs?: number;
}

/** A request as checked: its namespace is its agent's. */
type PlacedLock = LockInput & { namespace: string };

/** A request waiting for its resources, in arrival order. */
interface LockWaiter {
  input: PlacedLock;
  resources: string[];
  /** Its place in the store's line, which every node sharing the store follows. */
  seq: number;
  conflicts: LockHolder[];
  /** Requests ahead of it in the store's line (on any node) that were in its way at its last try. */
  ahead: StoredWaiter[];
  timer: NodeJS.Timeout;
  signal?: AbortSignal;
  onAbort?: () => void;
  resolve(lock: Lock): void;
  reject(err: unknown): void;
}

/** The 409: the holders in the way, or (none held) the requests ahead in line that want the same resources. */
const conflictError = (conflicts: LockHolder[], ahead: StoredWaiter[] = []) =>
  conflicts.length > 0 || ahead.length === 0
    ? new FleetError('FLEETD_ERR_LOCK_CONFLICT', `already locked: ${conflicts.map((c) => `${c.resource} (agent ${c.agentId})`).join(', ')}`, { conflicts })
    : new FleetError('FLEETD_ERR_LOCK_CONFLICT', `${ahead.length} earlier request(s) wait in line for the same resources`, { conflicts, waitingAhead: ahead.length });

/** Exclusive, all-or-nothing locks on named resources (files, URLs, anything), held by agents until released, expired or the agent goes offline. */
export class LockService {
  /**
   * Requests waiting here for their resources, first come first served. The line itself is kept in
   * the store (lockWaitJoin), so that it holds across nodes: a try takes the resources only if no
   * request ahead in the store's line, on any node, wants any of them, and a waiter is never passed
   * by a later one (nor by a request that does not wait). Each try takes every resource or none, so
   * waiters hold nothing while they wait and two cannot wait on each other.
   */
  private waiters: LockWaiter[] = [];
  private draining = false;
  private drainAgain = false;
  private unsubscribe: (() => void)[] = [];
  /** Wakes the line when a request ahead of one here would leave it by its deadline (its node may have died without saying). */
  private lineTimer: { at: number; timer: NodeJS.Timeout } | undefined;
  private stopped = false;

  constructor(private readonly ctx: FleetContext, private readonly timers: { locks: LockExpirer }) {}

  /**
   * Waiters look again whenever a lock goes (released, expired, its agent offline) or a request
   * leaves the line without its lock: this node's and, over a shared bus, other nodes'.
   */
  start(): void {
    this.unsubscribe.push(this.ctx.bus.subscribe('lock.released', () => void this.drain()));
    this.unsubscribe.push(this.ctx.bus.subscribe('locks.line', () => void this.drain()));
  }

  /** Every waiting request answers: the node is stopping. */
  stop(): void {
    this.stopped = true;
    for (const off of this.unsubscribe) off();
    this.unsubscribe = [];
    if (this.lineTimer) clearTimeout(this.lineTimer.timer);
    this.lineTimer = undefined;
    for (const w of [...this.waiters]) this.settle(w, new FleetError('FLEETD_ERR_SHUTTING_DOWN', 'the server is shutting down'));
  }

  /** Takes the resources now, or with waitMs waits for them in line; a conflict at the end of the wait is a 409 as without it. */
  async acquire(request: LockInput, signal?: AbortSignal): Promise<Lock> {
    const { input, resources } = await this.check(request);
    if (!input.waitMs) {
      let ahead: StoredWaiter[] = [];
      const got = await this.tryAcquire(input, resources, LAST_IN_LINE, (inTheWay) => (ahead = inTheWay));
      if ('id' in got) return got;
      throw conflictError(got, ahead);
    }
    const now = this.ctx.now();
    const seq = await this.ctx.store.lockWaitJoin({ namespace: input.namespace, resources, deadline: now + input.waitMs, now });
    return new Promise<Lock>((resolve, reject) => {
      const waiter: LockWaiter = {
        input,
        resources,
        seq,
        conflicts: [],
        ahead: [],
        resolve,
        reject,
        signal,
        timer: setTimeout(() => this.settle(waiter, this.timedOut(waiter)), input.waitMs),
      };
      waiter.timer.unref();
      if (signal) {
        waiter.onAbort = () => this.settle(waiter, new FleetError('FLEETD_ERR_REQUEST_TIMEOUT', 'the client stopped waiting'));
        signal.addEventListener('abort', waiter.onAbort, { once: true });
      }
      this.waiters.push(waiter);
      // Its first try, in its place in line.
      void this.drain();
    });
  }

  /** The 409 of a wait that ran out: the holders it met, or those earlier waiters here met, or the requests ahead in line. */
  private timedOut(waiter: LockWaiter): FleetError {
    if (waiter.conflicts.length > 0) return conflictError(waiter.conflicts);
    const metHere = this.waiters
      .filter((w) => w.input.namespace === waiter.input.namespace)
      .flatMap((w) => w.conflicts)
      .filter((c) => waiter.resources.some((r) => resourcesClash(r, c.resource)));
    return conflictError(metHere, waiter.ahead);
  }

  private settle(waiter: LockWaiter, outcome: Lock | Error): void {
    const at = this.waiters.indexOf(waiter);
    if (at < 0) return;
    this.waiters.splice(at, 1);
    clearTimeout(waiter.timer);
    if (waiter.onAbort) waiter.signal?.removeEventListener('abort', waiter.onAbort);
    if (outcome instanceof Error) waiter.reject(outcome);
    else waiter.resolve(outcome);
    // A request that got its lock left the line in the same write. One that leaves without (timed
    // out, gave up) may have been in the way of later ones, here or on other nodes: they look again.
    if (outcome instanceof Error) void this.leaveLine(waiter.seq);
  }

  private async leaveLine(seq: number): Promise<void> {
    try {
      await this.ctx.store.lockWaitLeave({ seq });
      this.ctx.bus.publish('locks.line', { left: seq });
    } catch (err) {
      // The store is away, or the node is stopping: the row lapses at its request's deadline, when
      // the requests behind it look again (armLineTimer).
      if (!this.stopped && !isDependencyUnavailable(err)) this.ctx.log.error({ err }, 'leaving the lock line failed');
    }
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
        // What waiters ahead here want: in the way of later ones of the same namespace only.
        const inTheWay: { namespace: string; resource: string }[] = [];
        for (const waiter of [...this.waiters]) {
          if (!this.waiters.includes(waiter)) continue;
          if (inTheWay.some((earlier) => earlier.namespace === waiter.input.namespace && waiter.resources.some((r) => resourcesClash(r, earlier.resource)))) {
            inTheWay.push(...waiter.resources.map((resource) => ({ namespace: waiter.input.namespace, resource })));
            continue;
          }
          waiter.ahead = [];
          const got = await this.tryAcquire(waiter.input, waiter.resources, waiter.seq, (ahead) => (waiter.ahead = ahead)).catch((err: unknown) => err as Error);
          if (!this.waiters.includes(waiter)) {
            // It answered while it tried (its wait ran out, its client left): a lock it got is nobody's.
            if (!(got instanceof Error) && 'id' in got) await this.release(got.id).catch(() => {});
            continue;
          }
          if (got instanceof Error || 'id' in got) this.settle(waiter, got);
          else {
            if (got.length > 0) waiter.conflicts = got;
            inTheWay.push(...waiter.resources.map((resource) => ({ namespace: waiter.input.namespace, resource })));
          }
        }
        this.armLineTimer();
      } while (this.drainAgain);
    } finally {
      this.draining = false;
    }
  }

  /**
   * A request ahead in line leaves it by its deadline at the latest: if it was on a node that died,
   * nobody says so, and the line here looks again then.
   */
  private armLineTimer(): void {
    const deadlines = this.waiters.flatMap((w) => w.ahead.map((a) => a.deadline));
    if (this.lineTimer) clearTimeout(this.lineTimer.timer);
    this.lineTimer = undefined;
    if (deadlines.length === 0 || this.stopped) return;
    const at = Math.min(...deadlines);
    const timer = setTimeout(() => {
      this.lineTimer = undefined;
      void this.drain();
    }, Math.max(0, at - this.ctx.now()) + 1);
    timer.unref();
    this.lineTimer = { at, timer };
  }

  /** Validates a request: the resources it takes, deduplicated. */
  private async check(input: LockInput): Promise<{ input: PlacedLock; resources: string[] }> {
    if (input.ttlMs > this.ctx.config.maxLockTtlMs) {
      throw invalid('ttlMs', `is over the limit of ${this.ctx.config.maxLockTtlMs} ms`, { max: this.ctx.config.maxLockTtlMs });
    }
    input.resources.forEach((resource, index) => {
      const bad = badLockPath(resource);
      if (bad) throw invalid('resources', `${JSON.stringify(resource)} ${bad}`, { index });
    });
    const resources = [...new Set(input.resources)];
    const agent = await this.ctx.store.agentGet({ id: input.agentId });
    if (!agent || (input.namespace !== undefined && input.namespace !== agent.namespace)) throw notFound('agent', input.agentId);
    if (agent.status === 'offline') {
      throw new FleetError('FLEETD_ERR_AGENT_OFFLINE', `agent ${input.agentId} is offline; heartbeat before taking locks`, {
        agentId: input.agentId,
      });
    }
    return { input: { ...input, namespace: agent.namespace }, resources };
  }

  /**
   * One all-or-nothing try, as the request at `seq` in line: the lock, or the holders in the way
   * (none when requests ahead in line are: `onAhead` is told which).
   */
  private async tryAcquire(input: PlacedLock, resources: string[], seq: number, onAhead: (ahead: StoredWaiter[]) => void): Promise<Lock | LockHolder[]> {
    const now = this.ctx.now();
    const result = await this.ctx.store.lockAcquire({
      id: randomUUID(),
      namespace: input.namespace,
      agentId: input.agentId,
      resources,
      ttlMs: input.ttlMs,
      description: input.description ?? '',
      now,
      decide: (holders) => decideLock(holders, now),
      probes: lockProbes(resources),
      line: placeInLine(seq, resources, onAhead),
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

  list(params: LockListParams): Promise<Page<Lock>> {
    return this.ctx.store.lockList(params);
  }
}
