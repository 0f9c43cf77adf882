import type { Redis } from 'ioredis';
import type { FleetdConfig } from '../config.js';
import { steadyNow } from '../core/clock.js';
import { defineScript } from '../redis/connection.js';

/**
 * Route groups, each with its own budget so that one kind of traffic cannot use up another's:
 * reads and writes are counted per client (API key or agent, else IP); heartbeats and claims per agent, so
 * that a chatty client cannot starve the fleet's heartbeats, nor one agent the others'.
 */
export type RouteGroup = 'read' | 'write' | 'heartbeat' | 'claim';

export interface LimitDecision {
  allowed: boolean;
  limit: number;
  remaining: number;
  /** Seconds until the budget is full again. */
  resetSeconds: number;
}

/** A budget's window: it starts with the first request counted and lasts a second (of a clock that never jumps). */
const WINDOW_MS = 1_000;

/**
 * How often a node tells Redis what it counted, and learns what the others did. Between two syncs
 * the other nodes' requests of the same client are not yet known here: the cluster may let a client
 * pass its budget by what the other nodes admit of it in one interval, never by more.
 */
export const RATE_LIMIT_SYNC_MS = 25;

/**
 * Adds each key's count (ARGV[i]) to its window in Redis, starting the window (its expiry) with the
 * first count; answers each key's total and the milliseconds its window has left.
 */
const ADD_COUNTS = 'fleetdRateLimitAdd';
const ADD_COUNTS_LUA = `
local out = {}
for i, key in ipairs(KEYS) do
  local n = tonumber(ARGV[i])
  local total = redis.call('INCRBY', key, n)
  if total == n then redis.call('PEXPIRE', key, ${WINDOW_MS}) end
  out[#out + 1] = total
  out[#out + 1] = redis.call('PTTL', key)
end
return out
`;

/** One client's budget of one group in the current window. */
interface Window {
  endsAt: number;
  /** Requests the whole cluster had counted at the last sync, this node's synced ones included. */
  counted: number;
  /** This node's requests since then, not yet in Redis. */
  unsynced: number;
}

/**
 * Budgets per second, one a group, counted in memory so that a request never waits for Redis. With
 * Redis (several nodes) each node adds what it counted to a shared count every RATE_LIMIT_SYNC_MS,
 * in one command for every client, and reads back the total: a Redis trip per request had cost a
 * node of two a sixth of its CPU. While Redis is away each node keeps to its own count.
 */
export class RateLimits {
  /** Each limited group's requests a window, and its clients' windows by key (a map a group: keys need no group prefix to look up). */
  private readonly budgets = new Map<RouteGroup, { limit: number; windows: Map<string, Window> }>();
  private readonly prefix: string;
  /** ADD_COUNTS, with Redis (several nodes). */
  private readonly addCounts?: (...args: (string | number)[]) => Promise<number[]>;
  private sync: NodeJS.Timeout | undefined;
  private readonly sweeper: NodeJS.Timeout;

  constructor(config: Readonly<FleetdConfig>, redis?: Redis) {
    const budgets: Record<RouteGroup, number> = {
      read: config.rateLimitRead,
      write: config.rateLimitWrite,
      heartbeat: config.rateLimitHeartbeat,
      claim: config.rateLimitClaim,
    };
    for (const [group, points] of Object.entries(budgets) as [RouteGroup, number][]) if (points > 0) this.budgets.set(group, { limit: points, windows: new Map() });
    this.prefix = `${config.redisPrefix}rl:`;
    this.addCounts = redis && defineScript(redis, ADD_COUNTS, ADD_COUNTS_LUA);
    // Windows of clients gone quiet are dropped, so that the map holds only this second's clients.
    this.sweeper = setInterval(() => this.sweep(), 10 * WINDOW_MS);
    this.sweeper.unref();
  }

  /** Whether the group has a limit at all (0 in the configuration means unlimited). */
  has(group: RouteGroup): boolean {
    return this.budgets.has(group);
  }

  /** Counts one request of `key` against the group's budget, unless the budget is spent; undefined when the group is unlimited. */
  consume(group: RouteGroup, key: string): LimitDecision | undefined {
    const budget = this.budgets.get(group);
    if (budget === undefined) return undefined;
    const { limit, windows } = budget;
    const now = steadyNow();
    let window = windows.get(key);
    if (!window || now >= window.endsAt) {
      window = { endsAt: now + WINDOW_MS, counted: 0, unsynced: 0 };
      windows.set(key, window);
    }
    const used = window.counted + window.unsynced;
    const resetSeconds = Math.max(1, Math.ceil((window.endsAt - now) / 1000));
    if (used >= limit) return { allowed: false, limit, remaining: 0, resetSeconds };
    window.unsynced++;
    if (this.addCounts) this.sync ??= setTimeout(() => void this.flush(), RATE_LIMIT_SYNC_MS);
    return { allowed: true, limit, remaining: limit - used - 1, resetSeconds };
  }

  /** Adds what this node counted to Redis and reads back every client's total. Resolves when done (or Redis failed). */
  async flush(): Promise<void> {
    clearTimeout(this.sync);
    this.sync = undefined;
    const addCounts = this.addCounts;
    if (!addCounts) return;
    const now = steadyNow();
    const sent: { window: Window; n: number }[] = [];
    const keys: string[] = [];
    for (const [group, { windows }] of this.budgets) {
      for (const [key, window] of windows) {
        if (window.unsynced === 0 || now >= window.endsAt) continue;
        sent.push({ window, n: window.unsynced });
        keys.push(`${this.prefix}${group}:${key}`);
      }
    }
    if (sent.length === 0) return;
    let reply: number[];
    try {
      reply = await addCounts(keys.length, ...keys, ...sent.map((s) => s.n));
    } catch {
      // Redis is away (the connection has no offline queue): the counts stay here, sent with the next request's sync.
      return;
    }
    const at = steadyNow();
    sent.forEach(({ window, n }, i) => {
      window.unsynced -= n;
      window.counted = reply[2 * i];
      const leftMs = reply[2 * i + 1];
      // The cluster's window is the one Redis keeps: it started with the first count any node sent.
      if (leftMs > 0) window.endsAt = at + leftMs;
    });
  }

  close(): void {
    clearTimeout(this.sync);
    clearInterval(this.sweeper);
  }

  private sweep(): void {
    const now = steadyNow();
    for (const { windows } of this.budgets.values()) for (const [key, window] of windows) if (now >= window.endsAt) windows.delete(key);
  }
}
