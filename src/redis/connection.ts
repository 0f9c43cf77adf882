import { Redis } from 'ioredis';
import type { FleetdConfig } from '../config.js';
import { unreported, type DependencyReporter } from '../domain/dependencies.js';

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
 * backoff. While it is down, commands fail at once instead of queueing (no offline queue): nothing
 * fleetd keeps in Redis is the only copy of anything, and every caller has a way round a failure
 * (per-node rate limits, no L2 cache, events left undelivered). `health` hears when it drops and
 * when it is back.
 */
export async function connectRedis(settings: RedisSettings, role: string, health?: DependencyReporter): Promise<Redis> {
  const redis = new Redis(settings.url, {
    connectionName: `fleetd-${role}`,
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    // A command in flight when the connection dropped is otherwise held until Redis is back (ioredis
    // keeps it to send again): the request waiting on it would hang for the whole outage.
    commandTimeout: 2_000,
    retryStrategy: (times) => Math.min(times * 100, 2_000),
    // Commands issued in one tick (a rate-limit check per request, cache version bumps, event
    // batches) leave in one write instead of a system call each.
    enableAutoPipelining: true,
  });
  watchRedis(redis, health);
  await redis.connect();
  return redis;
}

/**
 * Handles the connection's errors (ioredis retries by itself; unheard, each would be printed as an
 * "Unhandled error event") and reports its outages: down when a ready connection closes, up when it
 * is ready again.
 */
export function watchRedis(redis: Redis, health: DependencyReporter = unreported): void {
  let reason = 'the connection closed';
  let wasReady = false;
  redis.on('error', (err: Error) => (reason = err.message));
  redis.on('ready', () => {
    if (wasReady) health.up();
    wasReady = true;
  });
  redis.on('close', () => {
    if (wasReady && redis.status !== 'end') health.down(reason);
  });
}

/**
 * A Lua script as a command of the connection (ioredis's defineCommand: EVALSHA, and EVAL when
 * Redis does not have it yet). Call it with the number of keys, the keys, then the arguments.
 */
export function defineScript<T>(redis: Redis, name: string, lua: string): (...args: (string | number)[]) => Promise<T> {
  redis.defineCommand(name, { lua });
  const command = (redis as unknown as Record<string, (...args: (string | number)[]) => Promise<T>>)[name];
  return (...args) => command.apply(redis, args);
}
