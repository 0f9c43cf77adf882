import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decideLock, lockProbes } from '../../src/core/rules/locks.js';
import type { LockHolder } from '../../src/store/store.js';
import { T0, eachTest, type DriverFactory } from './harness.js';

/** Locks: all-or-nothing acquisition with core deciding on the holders, release, listing, expiry. */
export function exerciseLocks(factory: DriverFactory): void {
  describe('locks', () => {
    const h = eachTest(factory);
    const lock = (id: string, agentId: string, resources: string[], ttlMs = 1_000, now = T0) =>
      h.store.lockAcquire({ id, agentId, resources, ttlMs, description: '', now, decide: (holders) => decideLock(holders, now) });

    it('TakesEveryResourceOrNone and reports the holders of a conflict', async () => {
      const a = await h.agent(['k']);
      const b = await h.agent(['k']);
      const first = await h.store.lockAcquire({ id: 'L1', agentId: a, resources: ['f1', 'f2'], ttlMs: 1_000, description: 'edit', now: T0, decide: (hs) => decideLock(hs, T0) });
      assert.ok(first.acquired);
      assert.deepEqual(first.lock, { id: 'L1', agentId: a, resources: ['f1', 'f2'], description: 'edit', createdAt: T0, expiresAt: T0 + 1_000 });
      const clash = await lock('L2', b, ['f3', 'f2']);
      assert.deepEqual(clash, { acquired: false, conflicts: [{ resource: 'f2', lockId: 'L1', agentId: a, expiresAt: T0 + 1_000 }] });
      assert.equal(await h.store.lockGet({ id: 'L2' }), undefined);
      assert.ok((await lock('L3', b, ['f3'])).acquired, 'f3 was not taken by the refused lock');
      const refused = await h.store.lockRelease({ id: 'L1', holder: b });
      assert.deepEqual([refused.released, refused.current?.agentId], [undefined, a], 'another agent cannot release it; the holder is reported');
      assert.equal((await h.store.lockRelease({ id: 'L1', holder: a })).released?.id, 'L1');
      assert.deepEqual(await h.store.lockRelease({ id: 'L1' }), { released: undefined, current: undefined });
      assert.ok((await lock('L4', b, ['f2'], 10)).acquired);
    });

    it('AsksWithTheHoldersInTheOrderAskedFor, and writes nothing when told no', async () => {
      const a = await h.agent(['k']);
      await lock('A', a, ['r2', 'r1'], 100);
      let seen: LockHolder[] = [];
      const result = await h.store.lockAcquire({
        id: 'B', agentId: a, resources: ['r1', 'free', 'r2'], ttlMs: 100, description: '', now: T0,
        decide: (holders) => ((seen = holders), { acquire: false, conflicts: [] }),
      });
      assert.deepEqual(result, { acquired: false, conflicts: [] });
      assert.deepEqual(seen.map((x) => [x.resource, x.lockId]), [['r1', 'A'], ['r2', 'A']]);
      assert.equal(await h.store.lockGet({ id: 'B' }), undefined);
      assert.ok((await lock('C', a, ['free'])).acquired, 'the refused lock took nothing');
    });

    it('GrantsOneOfConcurrentLocksOnOneResource', async () => {
      const agents = await Promise.all([1, 2, 3, 4, 5].map(() => h.agent(['k'])));
      const results = await Promise.all(agents.map((a, i) => lock(`C${i}`, a, ['shared', `own-${i}`])));
      assert.equal(results.filter((r) => r.acquired).length, 1);
      assert.equal((await h.store.lockList({ limit: 10 })).items.length, 1);
    });

    it('ExpiresLocksByTTL, and a lapsed lock is replaced when core says so', async () => {
      const a = await h.agent(['k']);
      const b = await h.agent(['k']);
      await lock('old', a, ['r'], 100);
      await lock('long', a, ['s'], 500);
      assert.equal(await h.store.lockNextExpiry(), T0 + 100);
      const taken = await lock('new', b, ['r'], 100, T0 + 100);
      assert.ok(taken.acquired, 'a lock past its TTL is replaced');
      assert.equal(await h.store.lockGet({ id: 'old' }), undefined);
      const expired = await h.store.lockExpire({ now: T0 + 500, limit: 10 });
      assert.deepEqual(expired.map((l) => l.id).sort(), ['long', 'new']);
      assert.equal(await h.store.lockNextExpiry(), null);
    });

    it('PagesLocksOldestFirst, by agent', async () => {
      const a = await h.agent(['k']);
      const b = await h.agent(['k']);
      for (let i = 0; i < 5; i++) await lock(`P${i}`, i % 2 ? b : a, [`p${i}`]);
      const first = await h.store.lockList({ agentId: a, limit: 2 });
      assert.deepEqual(first.items.map((l) => l.id), ['P0', 'P2']);
      const second = await h.store.lockList({ agentId: a, limit: 2, cursor: first.nextCursor! });
      assert.deepEqual([second.items.map((l) => l.id), second.nextCursor], [['P4'], null]);
    });

    const dirLock = (id: string, agentId: string, resources: string[], ttlMs = 1_000, now = T0) =>
      h.store.lockAcquire({ id, agentId, resources, ttlMs, description: '', now, decide: (holders) => decideLock(holders, now), probes: lockProbes(resources) });

    it('TreatsANameEndingInSlashAsADirectory that clashes with everything below it, both ways', async () => {
      const a = await h.agent(['k']);
      const b = await h.agent(['k']);
      assert.ok((await dirLock('D1', a, ['src/lib/'])).acquired);
      const below = await dirLock('D2', b, ['src/lib/deep/a.ts']);
      assert.deepEqual(below, { acquired: false, conflicts: [{ resource: 'src/lib/', lockId: 'D1', agentId: a, expiresAt: T0 + 1_000 }] });
      const above = await dirLock('D3', b, ['src/']);
      assert.equal(above.acquired, false);
      assert.ok((await dirLock('D4', b, ['src/library.ts', 'src/lib', 'src/lib0/x'])).acquired, 'siblings whose names only start alike are free');
      assert.ok((await dirLock('D5', a, ['docs/a.md'])).acquired);
      const wide = await dirLock('D6', b, ['docs/']);
      assert.deepEqual(wide.acquired ? [] : wide.conflicts.map((c) => c.resource), ['docs/a.md']);
      // A lapsed directory lock holds nothing.
      assert.ok((await dirLock('D7', b, ['src/lib/x.ts'], 1_000, T0 + 1_000)).acquired);
    });

    it('RenewsALockThatHasNotLapsed, only for its holder', async () => {
      const a = await h.agent(['k']);
      const b = await h.agent(['k']);
      await lock('R1', a, ['r1'], 1_000);
      const refused = await h.store.lockRenew({ id: 'R1', holder: b, expiresAt: T0 + 5_000, now: T0 + 10 });
      assert.deepEqual([refused.renewed, refused.current?.expiresAt], [undefined, T0 + 1_000]);
      const renewed = await h.store.lockRenew({ id: 'R1', holder: a, expiresAt: T0 + 5_000, now: T0 + 10 });
      assert.equal(renewed.renewed?.expiresAt, T0 + 5_000);
      const lapsed = await h.store.lockRenew({ id: 'R1', expiresAt: T0 + 9_000, now: T0 + 5_000 });
      assert.equal(lapsed.renewed, undefined);
      assert.equal((await h.store.lockRenew({ id: 'nope', expiresAt: T0, now: T0 })).current, undefined);
    });

    it('KeepsALineOfWaitingRequests: those ahead are shown to the one trying, which takes nothing when told so and leaves the line when it takes its lock', async () => {
      const a = await h.agent(['k']);
      const first = await h.store.lockWaitJoin({ resources: ['src/', 'b'], deadline: T0 + 1_000, now: T0 });
      const second = await h.store.lockWaitJoin({ resources: ['src/x.ts'], deadline: T0 + 2_000, now: T0 });
      const third = await h.store.lockWaitJoin({ resources: ['c'], deadline: T0 + 2_000, now: T0 });
      assert.ok(first < second && second < third, 'places in line go up');
      const tryAs = (seq: number, resources: string[], now = T0, go = (ahead: unknown[]) => ahead.length === 0) => {
        let seen: { seq: number; resources: string[]; deadline: number }[] = [];
        const result = h.store.lockAcquire({
          id: `W${seq}-${now}`, agentId: a, resources, ttlMs: 100, description: '', now,
          decide: (holders) => decideLock(holders, now),
          line: { seq, mayGo: (ahead) => ((seen = ahead), go(ahead)) },
        });
        return result.then((r) => ({ r, seen }));
      };
      // The second sees the first ahead (its resources as asked, its deadline) and is told to wait: nothing taken.
      const blocked = await tryAs(second, ['src/x.ts']);
      assert.deepEqual(blocked.seen, [{ seq: first, resources: ['src/', 'b'], deadline: T0 + 1_000 }]);
      assert.deepEqual(blocked.r, { acquired: false, conflicts: [] });
      assert.deepEqual((await h.store.lockList({ limit: 10 })).items, []);
      // The third sees both ahead of it; told it may go, it takes its lock and leaves the line.
      const went = await tryAs(third, ['c'], T0, () => true);
      assert.deepEqual(went.seen.map((w) => w.seq), [first, second]);
      assert.ok(went.r.acquired);
      const behindAll = await tryAs(Number.MAX_SAFE_INTEGER, ['z']);
      assert.deepEqual(behindAll.seen.map((w) => w.seq), [first, second], 'the third left the line with its lock');
      // A request past its deadline (its node died) is not ahead of anyone; one that left is not either.
      assert.deepEqual((await tryAs(second, ['src/x.ts'], T0 + 1_000)).seen, []);
      await h.store.lockWaitLeave({ seq: second });
      assert.deepEqual((await tryAs(Number.MAX_SAFE_INTEGER, ['z2'], T0 + 10)).seen.map((w) => w.seq), [first]);
      // Joining drops requests whose deadline has passed.
      const fourth = await h.store.lockWaitJoin({ resources: ['d'], deadline: T0 + 5_000, now: T0 + 1_000 });
      assert.deepEqual((await tryAs(Number.MAX_SAFE_INTEGER, ['z3'], T0)).seen.map((w) => w.seq), [fourth]);
    });
  });
}
