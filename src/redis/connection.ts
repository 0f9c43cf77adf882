import { Redis } from 'ioredis';
import type { FleetdConfig } from '../config.js';

/** What every Redis user in fleetd (the bus, the L2 cache, shared rate limits) connects with. */
export interface RedisSettings {
  url: string;
  /** Put in front of every key and channel, so that several clusters can share one Redis. */
  prefix: string;
}

/** The Redis settings of a configuration, or undefined when Redis is not configured (one node). */
export function redisSettings(config: Readonly<FleetdConfig>): RedisSettings | undefined {
  return config.redisUrl === '' ? undefined : { url: config.redisUrl, prefix: config.redisPrefix };
}

/**
 * A connection named for its role (visible in CLIENT LIST). It reconnects by itself with a capped
 * backoff; commands issued while it is down fail after one retry instead of piling up, because
 * nothing fleetd keeps in Redis is the only copy of anything.
 */
export async function connectRedis(settings: RedisSettings, role: string): Promise<Redis> {
  const redis = new Redis(settings.url, {
    connectionName: `fleetd-${role}`,
    lazyConnect: true,
    maxRetriesPerRequest: 1,
    retryStrategy: (times) => Math.min(times * 100, 2_000),
    // Commands issued in one tick (a rate-limit check per request, cache version bumps, event
    // batches) leave in one write instead of a system call each.
    enableAutoPipelining: true,
  });
  // Connection errors are retried by the client; without a listener they would crash the process.
  redis.on('error', () => {});
  await redis.connect();
  return redis;
}
