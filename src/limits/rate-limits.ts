import type { Redis } from 'ioredis';
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';
import type { FleetdConfig } from '../config.js';

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

/** Budgets per second, one limiter per group; memory by default, Redis (shared by nodes) when given. */
export class RateLimits {
  private readonly limiters = new Map<RouteGroup, { points: number; limiter: RateLimiterAbstract }>();

  constructor(config: Readonly<FleetdConfig>, redis?: Redis) {
    const budgets: Record<RouteGroup, number> = {
      read: config.rateLimitRead,
      write: config.rateLimitWrite,
      heartbeat: config.rateLimitHeartbeat,
      claim: config.rateLimitClaim,
    };
    for (const [group, points] of Object.entries(budgets) as [RouteGroup, number][]) {
      if (points === 0) continue;
      const base = { points, duration: 1, keyPrefix: `fleetd:rl:${group}` };
      const memory = new RateLimiterMemory(base);
      // With Redis the budget is shared by every node; while Redis is away each node falls back to
      // its own (fleetd's connections have no offline queue, so a command then fails at once).
      const limiter = redis ? new RateLimiterRedis({ ...base, storeClient: redis, insuranceLimiter: memory }) : memory;
      this.limiters.set(group, { points, limiter });
    }
  }

  /** Whether the group has a limit at all (0 in the configuration means unlimited). */
  has(group: RouteGroup): boolean {
    return this.limiters.has(group);
  }

  async consume(group: RouteGroup, key: string): Promise<LimitDecision | undefined> {
    const entry = this.limiters.get(group);
    if (!entry) return undefined;
    try {
      const res = await entry.limiter.consume(key);
      return decision(true, entry.points, res);
    } catch (rejection) {
      if (rejection instanceof RateLimiterRes) return decision(false, entry.points, rejection);
      throw rejection;
    }
  }
}

function decision(allowed: boolean, limit: number, res: RateLimiterRes): LimitDecision {
  return { allowed, limit, remaining: Math.max(0, res.remainingPoints), resetSeconds: Math.max(1, Math.ceil(res.msBeforeNext / 1000)) };
}
