import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { ResponseCache } from '../src/cache/response-cache.js';
import { eventually } from './helpers.js';

const silent = { warn() {} };
const REDIS_URL = 'redis://127.0.0.1:6379/6';

function cache(options: Partial<ConstructorParameters<typeof ResponseCache>[0]> = {}) {
  return new ResponseCache({ maxEntries: 100, maxBytes: 1_000_000, ttlMs: 60_000, staleMs: 0, namespace: 'test', log: silent, ...options });
}

/** A compute function that counts its calls and can be held open. */
function source(value: unknown = { n: 1 }) {
  let release: () => void = () => {};
  const state = {
    calls: 0,
    value,
    gate: Promise.resolve(),
    hold() {
      state.gate = new Promise<void>((r) => (release = r));
    },
    release: () => release(),
    compute: async () => {
      state.calls++;
      const v = state.value;
      await state.gate;
      return { body: JSON.stringify(v), cacheable: true };
    },
  };
  return state;
}

describe('response cache', () => {
  it('computes concurrent misses on one key once (single flight)', async () => {
    const c = cache();
    const s = source();
    s.hold();
    const all = Promise.all(Array.from({ length: 20 }, () => c.get('k', ['t'], s.compute)));
    s.release();
    const results = await all;
    assert.equal(s.calls, 1);
    assert.ok(results.every((r) => r.body === '{"n":1}'));
    assert.equal((await c.get('k', ['t'], s.compute)).result, 'hit');
  });

  it('stays within its entry and byte bounds, counting evictions', async () => {
    const byEntries = cache({ maxEntries: 10 });
    for (let i = 0; i < 25; i++) await byEntries.get(`k${i}`, [], async () => ({ body: JSON.stringify(i), cacheable: true }));
    assert.equal(byEntries.size.entries, 10);
    assert.equal(byEntries.stats.evictions, 15);

    const byBytes = cache({ maxBytes: 2_000 });
    const big = 'x'.repeat(500);
    for (let i = 0; i < 10; i++) await byBytes.get(`k${i}`, [], async () => ({ body: JSON.stringify(big), cacheable: true }));
    assert.ok(byBytes.size.bytes <= 2_000, `${byBytes.size.bytes} bytes`);
    assert.equal(byBytes.size.entries, 3);
  });

  it('serves an aged entry once while recomputing it, but never one a write invalidated', async () => {
    let now = 0;
    const c = cache({ ttlMs: 1_000, staleMs: 1_000, now: () => now });
    const s = source({ v: 'old' });
    await c.get('k', ['t'], s.compute);
    now = 1_500;
    s.value = { v: 'new' };
    const stale = await c.get('k', ['t'], s.compute);
    assert.equal(stale.result, 'stale');
    assert.equal(stale.body, '{"v":"old"}');
    await new Promise((r) => setImmediate(r));
    assert.equal((await c.get('k', ['t'], s.compute)).body, '{"v":"new"}');

    s.value = { v: 'newer' };
    c.invalidate(['t']);
    const after = await c.get('k', ['t'], s.compute);
    assert.equal(after.result, 'miss');
    assert.equal(after.body, '{"v":"newer"}');
  });

  it('does not keep or share a computation that an invalidation overtook', async () => {
    const c = cache();
    const s = source({ v: 'before write' });
    s.hold();
    const early = c.get('k', ['t'], s.compute);
    // The write lands (and invalidates) while the read that began before it is still computing.
    s.value = { v: 'after write' };
    c.invalidate(['t']);
    const late = c.get('k', ['t'], source({ v: 'after write' }).compute);
    s.release();
    assert.equal((await early).body, '{"v":"before write"}');
    assert.equal((await late).body, '{"v":"after write"}');
    assert.equal((await c.get('k', ['t'], s.compute)).body, '{"v":"after write"}');
  });

  it('keeps no state for the tags it was told of once nothing that holds them is in flight', async () => {
    const c = cache();
    const s = source();
    s.hold();
    const inFlight = c.get('k', ['task:1', 'tasks'], s.compute);
    for (let id = 1; id <= 10_000; id++) c.invalidate([`task:${id}`, 'tasks']);
    assert.equal(c.trackedTags, 3, 'only the tags of the computation in flight, and the one every entry carries');
    s.release();
    await inFlight;
    assert.equal(c.trackedTags, 0, 'one entry per task ever written would grow without end');
    assert.equal((await c.get('k', ['task:1', 'tasks'], s.compute)).result, 'miss', 'the raced computation was not kept');
  });

  it('does not cache what the caller says is not cacheable', async () => {
    const c = cache();
    let calls = 0;
    const compute = async () => ({ body: JSON.stringify(++calls), cacheable: false });
    await c.get('k', [], compute);
    await c.get('k', [], compute);
    assert.equal(calls, 2);
  });

  describe('with Redis (L2)', () => {
    const redisA = new Redis(REDIS_URL);
    const redisB = new Redis(REDIS_URL);
    after(async () => {
      await redisA.quit();
      await redisB.quit();
    });

    it('keeps fleets that share one Redis apart', async () => {
      const key = `/test/${Date.now()}-${Math.random()}`;
      const a = cache({ redis: redisA, namespace: 'fleet-a' });
      const b = cache({ redis: redisB, namespace: 'fleet-b' });
      await a.get(key, [], async () => ({ body: JSON.stringify('from a'), cacheable: true }));
      await eventually(async () => (await redisA.exists(`fleetd:cache:fleet-a:e:${key}`)) === 1, 5_000, 'the L2 write');
      const fromB = await b.get(key, [], async () => ({ body: JSON.stringify('from b'), cacheable: true }));
      assert.equal(fromB.result, 'miss');
      assert.equal(fromB.body, '"from b"');
    });

    it('sends one invalidation per write: a node relaying another node\'s invalidation only drops its own copies', async () => {
      const key = `/test/${Date.now()}-${Math.random()}`;
      const tag = `tag-${Math.random()}`;
      const a = cache({ redis: redisA });
      const b = cache({ redis: redisB });
      const s = source({ v: 1 });
      await a.get(key, [tag], s.compute);
      await eventually(async () => (await redisA.exists(`fleetd:cache:test:e:${key}`)) === 1, 5_000, 'the L2 write');
      assert.equal((await b.get(key, [tag], s.compute)).result, 'l2_hit');
      // A writes and invalidates for the cluster; B hears of the write (the bus relays it) and invalidates here only.
      const listener = redisA.duplicate();
      const announced: string[] = [];
      listener.on('message', (_channel: string, message: string) => announced.push(message));
      await listener.subscribe('fleetd:cache:test:invalidate');
      try {
        s.value = { v: 2 };
        a.invalidate([tag]);
        b.invalidate([tag], 'node');
        await eventually(() => announced.length > 0, 5_000, "A's invalidation");
        const fresh = await b.get(key, [tag], s.compute);
        assert.deepEqual([fresh.result, fresh.body], ['miss', '{"v":2}'], 'B dropped its copy and the L2 one is outdated');
        await new Promise((r) => setTimeout(r, 200));
        assert.equal(announced.length, 1, 'one write, one invalidation sent: B did not repeat it');
        assert.ok((await redisA.pttl(`fleetd:cache:test:v:${tag}`)) > 0, 'version keys expire, not one per task forever');
      } finally {
        await listener.quit();
      }
    });

    it('shares entries between nodes and invalidates them on every node', async () => {
      const key = `/test/${Date.now()}-${Math.random()}`;
      const tag = `tag-${Math.random()}`;
      const a = cache({ redis: redisA });
      const b = cache({ redis: redisB });
      await a.start();
      await b.start();
      try {
        const s = source({ v: 1 });
        assert.equal((await a.get(key, [tag], s.compute)).result, 'miss');
        // The reader does not wait for its L2 write.
        await eventually(async () => (await redisA.exists(`fleetd:cache:test:e:${key}`)) === 1, 5_000, 'the L2 write');
        assert.equal((await b.get(key, [tag], s.compute)).result, 'l2_hit');
        assert.equal((await b.get(key, [tag], s.compute)).result, 'hit');
        assert.equal(s.calls, 1);

        // Node A writes: B's L1 copy goes (pub/sub) and the L2 copy is ignored (tag version).
        s.value = { v: 2 };
        a.invalidate([tag]);
        await eventually(() => b.size.entries === 0, 5_000, "node B's L1 copy to be dropped");
        const fresh = await b.get(key, [tag], s.compute);
        assert.equal(fresh.result, 'miss');
        assert.equal(fresh.body, '{"v":2}');
      } finally {
        await a.close();
        await b.close();
      }
    });
  });
});
