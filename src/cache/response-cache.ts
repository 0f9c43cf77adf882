import { createHash, randomInt, randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { LRUCache } from 'lru-cache';
import { steadyNow } from '../core/clock.js';
import { defineScript } from '../redis/connection.js';

/** A cached JSON response body and its ETag. */
export interface CachedBody {
  body: string;
  etag: string;
}

export type Lookup = CachedBody & { result: 'hit' | 'l2_hit' | 'stale' | 'miss' };

interface Entry extends CachedBody {
  tags: string[];
  freshUntil: number;
  hits: number;
}

export interface ResponseCacheOptions {
  /** Most entries in L1. */
  maxEntries: number;
  /** Most bytes of bodies in L1. */
  maxBytes: number;
  ttlMs: number;
  /** How long past its TTL an entry may be served while it is recomputed. */
  staleMs: number;
  /** The L2 and the channel on which nodes tell each other what to invalidate; none keeps it in-process. */
  redis?: Redis;
  /**
   * Separates fleets that share one Redis: only nodes that share a store may share entries. Prefixes
   * every Redis key and the invalidation channel.
   */
  namespace: string;
  log: { warn(obj: object, msg: string): void };
  now?: () => number;
}

/**
 * One invalidation in one command: each tag's version moves on by its step (ARGV[4…]) and expires in
 * ARGV[1] ms, then ARGV[3] is published on channel ARGV[2] for the other nodes' L1 copies.
 */
const BUMP_TAGS = 'fleetdCacheBumpTags';
const BUMP_TAGS_LUA = `
for i, key in ipairs(KEYS) do
  redis.call('INCRBY', key, ARGV[3 + i])
  redis.call('PEXPIRE', key, ARGV[1])
end
redis.call('PUBLISH', ARGV[2], ARGV[3])
`;

/**
 * A tag every entry carries: invalidating it drops everything, on every node and in L2. What a node
 * does when Redis is back, since invalidations may have been lost while it was away.
 */
const EVERY_ENTRY = '*';

export function etagOf(body: string): string {
  return `"${createHash('sha1').update(body).digest('base64url').slice(0, 22)}"`;
}

/**
 * A bounded two-level cache of JSON response bodies.
 *
 * - L1 is an in-process LRU bounded by entries and bytes; L2 (optional) is Redis, shared by nodes.
 * - Every entry carries tags ("task:42", "tasks"); `invalidate(tags)` deletes what carries them, at
 *   once in this process and, through Redis, on every node. Writes invalidate, they never leave a
 *   stale entry behind: stale-while-revalidate only applies to entries that merely aged past their TTL.
 * - Concurrent misses on one key share one computation (single flight).
 * - A computation that was running when one of its tags was invalidated is not stored (it may have
 *   read the data before the write), and later lookups do not join it. In L2 the same guard is a
 *   version per tag: an entry records the versions it was computed under, and is ignored once any
 *   of them has moved on, whichever node wrote it.
 * - With Redis, while either of its connections is down the cache is bypassed (both levels: an L1
 *   entry can no longer hear of other nodes' writes), and when they are back every entry is dropped,
 *   here, on the other nodes and in L2, since invalidations may have been lost meanwhile.
 */
export class ResponseCache {
  readonly stats = { hit: 0, l2_hit: 0, stale: 0, miss: 0, evictions: 0 };
  private readonly l1: LRUCache<string, Entry>;
  private readonly byTag = new Map<string, Set<string>>();
  /**
   * Bumped on each invalidation of a tag while a computation holding it is in flight, to detect
   * computations that raced one. Only tags of computations in flight are kept (with how many hold
   * them): a map of every tag ever invalidated — one per task — would grow for as long as the
   * server runs.
   */
  private readonly generations = new Map<string, { generation: number; holders: number }>();
  private readonly inflight = new Map<string, { tags: string[]; promise: Promise<Lookup> }>();
  private readonly now: () => number;
  private readonly node = randomUUID();
  private subscriber?: Redis;
  /** Redis connections that closed and are not ready again. */
  private readonly dropped = new Set<Redis>();
  private pendingRemote = new Set<string>();
  private bytes = 0;
  private readonly prefix: string;
  private readonly channel: string;
  /** BUMP_TAGS, with Redis. */
  private readonly bumpTags?: (...args: (string | number)[]) => Promise<unknown>;

  constructor(private readonly options: ResponseCacheOptions) {
    this.bumpTags = options.redis && defineScript(options.redis, BUMP_TAGS, BUMP_TAGS_LUA);
    this.dropEverythingOnReturn(options.redis);
    this.now = options.now ?? steadyNow;
    this.prefix = `fleetd:cache:${options.namespace}:`;
    this.channel = `${this.prefix}invalidate`;
    this.l1 = new LRUCache<string, Entry>({
      max: options.maxEntries,
      maxSize: options.maxBytes,
      sizeCalculation: (e) => Math.max(1, e.body.length),
      ttl: options.ttlMs + options.staleMs,
      dispose: (entry, key, reason) => {
        this.bytes -= Math.max(1, entry.body.length);
        if (reason === 'evict') this.stats.evictions++;
        for (const tag of entry.tags) {
          const keys = this.byTag.get(tag);
          keys?.delete(key);
          if (keys?.size === 0) this.byTag.delete(tag);
        }
      },
    });
  }

  /** Starts listening for other nodes' invalidations. */
  async start(): Promise<void> {
    const redis = this.options.redis;
    if (!redis) return;
    this.subscriber = redis.duplicate({ connectionName: `${redis.options.connectionName ?? 'fleetd-cache'}-sub` });
    // ioredis retries by itself; unheard, each error would be printed as an "Unhandled error event".
    this.subscriber.on('error', () => {});
    this.subscriber.on('message', (_channel: string, message: string) => {
      const { node, tags } = JSON.parse(message) as { node: string; tags: string[] };
      if (node !== this.node) this.invalidateLocal(tags);
    });
    this.dropEverythingOnReturn(this.subscriber);
    if (this.subscriber.status === 'wait') await this.subscriber.connect();
    await this.subscriber.subscribe(this.channel);
  }

  async close(): Promise<void> {
    await this.subscriber?.quit().catch(() => undefined);
  }

  get size(): { entries: number; bytes: number } {
    return { entries: this.l1.size, bytes: this.bytes };
  }

  /**
   * The cached body for `key`, or the one `compute` produces. `compute` returns the body to send,
   * as JSON text, and whether it may be cached (a task still in flight changes without notice, for
   * instance).
   */
  async get(key: string, ownTags: string[], compute: () => Promise<{ body: string; cacheable: boolean }>): Promise<Lookup> {
    if (this.detached()) {
      this.stats.miss++;
      const { body } = await compute();
      return { body, etag: etagOf(body), result: 'miss' };
    }
    const tags = [...ownTags, EVERY_ENTRY];
    const entry = this.l1.get(key);
    if (entry) {
      entry.hits++;
      if (this.now() < entry.freshUntil) {
        this.stats.hit++;
        return { body: entry.body, etag: entry.etag, result: 'hit' };
      }
      this.stats.stale++;
      this.load(key, tags, compute).catch((err) => this.options.log.warn({ err, key }, 'cache refresh failed'));
      return { body: entry.body, etag: entry.etag, result: 'stale' };
    }
    return this.load(key, tags, compute);
  }

  /** Deletes every entry carrying one of the tags, here and (unless `scope` is 'node') on every node. */
  invalidate(tags: string[], scope: 'cluster' | 'node' = 'cluster'): void {
    this.invalidateLocal(tags);
    // While the connection is down the invalidation cannot reach Redis; everything is dropped when
    // it is back. Only this connection matters here: with the subscriber alone down, the other
    // nodes must still hear of this node's writes.
    if (!this.options.redis || scope === 'node' || this.dropped.has(this.options.redis)) return;
    // Batched per turn of the event loop, so that the requests of one turn share one command. Still
    // ordered before any later lookup on this node: a read of L2 sends what is pending first, on
    // the same connection (readL2).
    const first = this.pendingRemote.size === 0;
    for (const tag of tags) this.pendingRemote.add(tag);
    if (first) setImmediate(() => this.flushRemote());
  }

  /** The most read keys, most read first: what to warm at the next start. */
  hotKeys(n: number): string[] {
    const entries = [...this.l1.entries()].filter(([, e]) => e.hits > 0);
    entries.sort((a, b) => b[1].hits - a[1].hits);
    return entries.slice(0, n).map(([k]) => k);
  }

  /** Whether a Redis connection dropped and is not back: the cache can no longer be kept coherent with the other nodes. */
  private detached(): boolean {
    return this.dropped.size > 0;
  }

  /** Empties L1 when `connection` drops, and when it is ready again drops every entry on every node and in L2. */
  private dropEverythingOnReturn(connection: Redis | undefined): void {
    if (!connection) return;
    connection.on('close', () => {
      this.dropped.add(connection);
      this.invalidateLocal([EVERY_ENTRY]);
    });
    connection.on('ready', () => {
      if (!this.dropped.delete(connection)) return;
      this.invalidate([EVERY_ENTRY]);
    });
  }

  private flushRemote(): void {
    if (this.pendingRemote.size === 0) return;
    const tags = [...this.pendingRemote];
    this.pendingRemote.clear();
    const keys = tags.map((tag) => `${this.prefix}v:${tag}`);
    // A random step, not 1: a version key that expired counts again from 0 and must not come back to
    // a value an entry written just before the expiry recorded.
    const steps = tags.map(() => randomInt(1, 2 ** 20));
    this.bumpTags!(keys.length, ...keys, this.versionTtlMs, this.channel, JSON.stringify({ node: this.node, tags }), ...steps)
      .catch((err) => this.options.log.warn({ err }, 'cache invalidation could not reach Redis'));
  }

  private invalidateLocal(tags: string[]): void {
    for (const tag of tags) {
      const held = this.generations.get(tag);
      if (held) held.generation++;
      const keys = this.byTag.get(tag);
      if (keys) for (const key of [...keys]) this.l1.delete(key);
    }
    for (const [key, flight] of this.inflight) {
      if (flight.tags.some((t) => tags.includes(t))) this.inflight.delete(key);
    }
  }

  private generationOf(tags: string[]): number {
    let sum = 0;
    for (const tag of tags) sum += this.generations.get(tag)?.generation ?? 0;
    return sum;
  }

  private load(key: string, tags: string[], compute: () => Promise<{ body: string; cacheable: boolean }>): Promise<Lookup> {
    const running = this.inflight.get(key);
    if (running) {
      this.stats.hit++;
      return running.promise;
    }
    this.hold(tags);
    const generation = this.generationOf(tags);
    const promise = (async (): Promise<Lookup> => {
      let versions: string[] | undefined;
      if (this.options.redis) {
        try {
          const fromL2 = await this.readL2(key, tags);
          versions = fromL2.versions;
          if (fromL2.entry) {
            this.stats.l2_hit++;
            if (this.generationOf(tags) === generation) this.store(key, tags, fromL2.entry);
            return { ...fromL2.entry, result: 'l2_hit' };
          }
        } catch (err) {
          this.options.log.warn({ err, key }, 'L2 cache unavailable; computing');
        }
      }
      this.stats.miss++;
      const { body, cacheable } = await compute();
      const computed = { body, etag: etagOf(body) };
      if (cacheable && this.generationOf(tags) === generation) {
        this.store(key, tags, computed);
        if (versions) this.writeL2(key, computed, versions, tags);
      }
      return { ...computed, result: 'miss' };
    })().finally(() => {
      this.release(tags);
      if (this.inflight.get(key)?.promise === promise) this.inflight.delete(key);
    });
    this.inflight.set(key, { tags, promise });
    return promise;
  }

  private hold(tags: string[]): void {
    for (const tag of tags) {
      const held = this.generations.get(tag);
      if (held) held.holders++;
      else this.generations.set(tag, { generation: 0, holders: 1 });
    }
  }

  private release(tags: string[]): void {
    for (const tag of tags) {
      const held = this.generations.get(tag)!;
      if (--held.holders === 0) this.generations.delete(tag);
    }
  }

  /** Tags the cache keeps state for beyond its entries: those of computations in flight. */
  get trackedTags(): number {
    return this.generations.size;
  }

  private store(key: string, tags: string[], value: CachedBody): void {
    const size = Math.max(1, value.body.length);
    if (size > this.options.maxBytes) return;
    this.l1.set(key, { ...value, tags, freshUntil: this.now() + this.options.ttlMs, hits: 0 });
    if (!this.l1.has(key)) return;
    this.bytes += size;
    for (const tag of tags) {
      let keys = this.byTag.get(tag);
      if (!keys) this.byTag.set(tag, (keys = new Set()));
      keys.add(key);
    }
  }

  private async readL2(key: string, tags: string[]): Promise<{ entry?: CachedBody; versions: string[] }> {
    const redis = this.options.redis!;
    this.flushRemote();
    const [versions, raw] = await Promise.all([
      tags.length > 0 ? redis.mget(...tags.map((t) => `${this.prefix}v:${t}`)) : Promise.resolve([] as (string | null)[]),
      redis.get(`${this.prefix}e:${key}`),
    ]);
    const current = versions.map((v) => v ?? '0');
    if (raw === null) return { versions: current };
    const stored = JSON.parse(raw) as CachedBody & { versions: string[] };
    const valid = stored.versions.length === current.length && stored.versions.every((v, i) => v === current[i]);
    return { entry: valid ? { body: stored.body, etag: stored.etag } : undefined, versions: current };
  }

  /**
   * A tag's version key expires, so that one key per task does not stay in Redis forever, but not
   * before the entries computed under its version: each entry written pushes the expiry of its tags'
   * keys past its own.
   */
  private get versionTtlMs(): number {
    return 2 * this.options.ttlMs;
  }

  private writeL2(key: string, value: CachedBody, versions: string[], tags: string[]): void {
    const pipeline = this.options.redis!.pipeline().set(`${this.prefix}e:${key}`, JSON.stringify({ ...value, versions }), 'PX', this.options.ttlMs);
    for (const tag of tags) pipeline.pexpire(`${this.prefix}v:${tag}`, this.versionTtlMs);
    pipeline.exec().catch((err) => this.options.log.warn({ err, key }, 'L2 cache write failed'));
  }
}
