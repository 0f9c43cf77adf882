import type { Redis } from 'ioredis';
import { RateLimiterMemory, RateLimiterRedis, type RateLimiterAbstract } from 'rate-limiter-flexible';

/** What a failed authentication did to its address's budget. */
export interface FailureCount {
  /** Failures from the address in the current minute, this one included. */
  failures: number;
  /** True for the failure that used up the budget: the start of a burst, logged once. */
  burstStarted: boolean;
  /** Seconds until the address may try again. */
  retryAfterSeconds: number;
}

/**
 * Failed authentications per client address, so that keys cannot be guessed at speed: once an
 * address has failed `perMinute` times within a minute, every request of it that needs a credential
 * is refused (the right key too: a guess that succeeds must look like one that fails) until the
 * minute it started is over. Counted in Redis when one is configured, so that the budget holds
 * across nodes; while Redis is away each node counts on its own.
 */
export class AuthFailureLimiter {
  private readonly limiter: RateLimiterAbstract;
  private readonly redis: Redis | undefined;

  constructor(readonly perMinute: number, options: { redis?: Redis; prefix: string }) {
    const base = { points: perMinute, duration: 60, keyPrefix: `${options.prefix}authfail` };
    const memory = new RateLimiterMemory(base);
    this.redis = options.redis;
    this.limiter = options.redis ? new RateLimiterRedis({ ...base, storeClient: options.redis, insuranceLimiter: memory }) : memory;
  }

  /** Seconds the address must wait before it may authenticate again, or undefined when it may now. */
  async blockedFor(address: string): Promise<number | undefined> {
    // Asked on every credentialed request. The limiter's own read is a MULTI (GET, PTTL) of its own,
    // one write to Redis per request; a plain GET of the same key joins the tick's pipeline, and the
    // limiter is asked only for an address at or past its budget (or while Redis is away, when it
    // answers from this node's count).
    if (this.redis) {
      try {
        const points = await this.redis.get(this.limiter.getKey(address));
        if (points === null || Number(points) < this.perMinute) return undefined;
      } catch {
        // Redis is away: the limiter below falls back to this node's count.
      }
    }
    const res = await this.limiter.get(address);
    if (!res || res.consumedPoints < this.perMinute) return undefined;
    return Math.max(1, Math.ceil(res.msBeforeNext / 1000));
  }

  /** Counts one failed authentication of the address. */
  async fail(address: string): Promise<FailureCount> {
    // penalty rather than consume: consume rejects once the budget is spent, and the count is all that is wanted here.
    const res = await this.limiter.penalty(address, 1);
    return {
      failures: res.consumedPoints,
      burstStarted: res.consumedPoints === this.perMinute,
      retryAfterSeconds: Math.max(1, Math.ceil(res.msBeforeNext / 1000)),
    };
  }
}
