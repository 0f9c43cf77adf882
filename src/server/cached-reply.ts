import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { brotliCompress, constants as zlib, gzip } from 'node:zlib';
import negotiate from '@fastify/accept-negotiator';
import fp from 'fastify-plugin';
import { LRUCache } from 'lru-cache';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { invalidateOnEvents } from '../cache/invalidation.js';
import { etagOf, type ResponseCache } from '../cache/response-cache.js';
import type { Fleet } from '../core/fleet.js';
import { compression } from './http.js';
import { cachePartition } from './namespaces.js';

declare module 'fastify' {
  interface FastifyInstance {
    /** Requests the keys most read before the last shutdown, so that they are cached; call once listening. */
    warmCache?: () => Promise<void>;
  }
}

const encoders = {
  br: (body: string) => promisify(brotliCompress)(body, { params: { [zlib.BROTLI_PARAM_QUALITY]: compression.brotliQuality } }),
  gzip: (body: string) => promisify(gzip)(body),
};

/**
 * Compressed copies of cached bodies, by encoding and ETag, so that a cache hit is not compressed
 * again for every client. An ETag names the body's content, so a copy can never be stale: the
 * bound (16 MiB) is the only reason one leaves.
 */
const compressedBodies = new LRUCache<string, Buffer>({ maxSize: 16 * 1024 * 1024, sizeCalculation: (b) => Math.max(1, b.length) });

async function compressed(body: string, etag: string, encoding: keyof typeof encoders): Promise<Buffer> {
  const key = `${encoding}:${etag}`;
  let buffer = compressedBodies.get(key);
  if (!buffer) {
    buffer = await encoders[encoding](body);
    compressedBodies.set(key, buffer);
  }
  return buffer;
}

const HOT_KEYS_FILE = 'cache-hot-keys.json';
const HOT_KEYS = 100;

export interface CachedRoute<T> {
  /** What the response derives from, e.g. ["task:42"]; a write to any of them invalidates it. */
  tags: string[];
  compute: () => Promise<T>;
  /** Whether this value may be cached; by default always. */
  cacheable?: (value: T) => boolean;
  /** The value as JSON text; by default JSON.stringify's. Tasks splice in their payloads' text as it is stored (taskJsonText). */
  text?: (value: T) => string;
}

const textOf = <T>(route: CachedRoute<T>, value: T): string => (route.text ? route.text(value) : JSON.stringify(value));

/**
 * Answers a GET from the response cache (or computes it, without a cache), with an ETag, and 304
 * when the client's If-None-Match already names it. `Cache-Control: no-cache` lets clients keep the
 * body but makes them ask again each time, so that they never use one a write has made stale.
 */
export function sendCached<T>(request: FastifyRequest, reply: FastifyReply, cache: ResponseCache | undefined, route: CachedRoute<T>): void {
  // A handler that returns nothing leaves the reply to us; an async one resolving to undefined would
  // make Fastify send an empty body while compression is still under way.
  respond(request, reply, cache, route).catch((err: unknown) => reply.send(err));
}

async function respond<T>(request: FastifyRequest, reply: FastifyReply, cache: ResponseCache | undefined, route: CachedRoute<T>): Promise<void> {
  let body: string;
  let etag: string;
  if (cache) {
    const found = await cache.get(`${cachePartition(request)}${request.url}`, route.tags, async () => {
      const value = await route.compute();
      return { body: textOf(route, value), cacheable: route.cacheable?.(value) ?? true };
    });
    ({ body, etag } = found);
    void reply.header('x-cache', found.result);
  } else {
    body = textOf(route, await route.compute());
    etag = etagOf(body);
  }
  void reply.header('etag', etag).header('cache-control', 'no-cache');
  const ifNoneMatch = request.headers['if-none-match'];
  if (ifNoneMatch && ifNoneMatch.split(',').some((t) => t.trim() === etag || t.trim() === '*')) {
    void reply.status(304).send();
    return;
  }
  void reply.header('content-type', 'application/json; charset=utf-8');
  if (cache && body.length >= compression.threshold) {
    const encoding = negotiate(request.headers['accept-encoding'] ?? '', ['br', 'gzip'] as const);
    if (encoding) {
      const buffer = await compressed(body, etag, encoding);
      // Already encoded: the compression plugin leaves a reply with a content-encoding alone.
      void reply.header('content-encoding', encoding).header('vary', 'accept-encoding').send(buffer);
      return;
    }
  }
  // A string body is sent as it is: it was serialised once, when it was cached.
  void reply.send(body);
}

/**
 * Wires the response cache into the app: invalidation from the bus, other nodes' invalidations
 * through Redis, and warming. At close the most read keys are saved in the data folder; at the next
 * start (`app.warmCache()`) they are requested once, so that the first readers find them cached.
 */
export const cachePlugin = fp<{ cache: ResponseCache; fleet: Fleet; dataDir: string }>(async (app, { cache, fleet, dataDir }) => {
  await cache.start();
  const stop = invalidateOnEvents(fleet.bus, cache);
  const file = join(dataDir, HOT_KEYS_FILE);

  app.decorate('warmCache', async () => {
    if (!existsSync(file)) return;
    let keys: unknown;
    try {
      keys = JSON.parse(readFileSync(file, 'utf8'));
    } catch (err) {
      app.log.warn({ err, file }, 'ignoring an unreadable cache warm-up file');
      return;
    }
    if (!Array.isArray(keys)) return;
    for (const url of keys) {
      if (typeof url === 'string' && url.startsWith('/')) {
        await app.inject({ method: 'GET', url, headers: { authorization: `Bearer ${fleet.credentials.internalReadKey}` } });
      }
    }
  });

  app.addHook('onClose', async () => {
    stop();
    try {
      writeFileSync(file, JSON.stringify(cache.hotKeys(HOT_KEYS)));
    } catch (err) {
      app.log.warn({ err, file }, 'could not save the hot cache keys');
    }
    await cache.close();
  });
});
