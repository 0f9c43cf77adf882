import type { Redis } from 'ioredis';
import { LRUCache } from 'lru-cache';
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
 *
 * Every request that needs a credential asks whether its address is refused, so that question must
 * not cost a trip to Redis: only addresses that failed on this node within the minute are looked up
 * there, and the rest, every well-behaved client, are answered from memory. An address that spent
 * its budget on other nodes gets one more guess on this one: it fails, is counted, and from then on
 * this node looks it up too.
 */
export class AuthFailureLimiter {
  private readonly limiter: RateLimiterAbstract;
  /** Addresses that failed here within the minute (the LRU's ttl, renewed by each failure): only these are looked up. */
  private readonly failedHere: LRUCache<string, true>;

  constructor(readonly perMinute: number, options: { redis?: Redis; prefix: string }) {
    const base = { points: perMinute, duration: 60, keyPrefix: `${options.prefix}authfail` };
    const memory = new RateLimiterMemory(base);
    this.limiter = options.redis ? new RateLimiterRedis({ ...base, storeClient: options.redis, insuranceLimiter: memory }) : memory;
    this.failedHere = new LRUCache({ max: 100_000, ttl: base.duration * 1_000 });
  }

  /** False for an address that has not failed here within the minute: it is not refused, and blockedFor need not be asked. */
  mayBeBlocked(address: string): boolean {
    return this.failedHere.has(address);
  }

  /** Seconds the address must wait before it may authenticate again, or undefined when it may now. */
  async blockedFor(address: string): Promise<number | undefined> {
    if (!this.mayBeBlocked(address)) return undefined;
    const res = await this.limiter.get(address);
    if (!res || res.consumedPoints < this.perMinute) return undefined;
    return Math.max(1, Math.ceil(res.msBeforeNext / 1000));
  }

  /** Counts one failed authentication of the address. */
  async fail(address: string): Promise<FailureCount> {
    // penalty rather than consume: consume rejects once the budget is spent, and the count is all that is wanted here.
    this.failedHere.set(address, true);
    const res = await this.limiter.penalty(address, 1);
    return {
      failures: res.consumedPoints,
      burstStarted: res.consumedPoints === this.perMinute,
      retryAfterSeconds: Math.max(1, Math.ceil(res.msBeforeNext / 1000)),
    };
  }
}
