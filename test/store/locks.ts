import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { planClaim } from '../../src/core/rules/admission.js';
import { decideLock, lockProbes } from '../../src/core/rules/locks.js';
import type { LockHolder } from '../../src/store/store.js';
import { T0, eachTest, task, type DriverFactory } from './harness.js';

/** Locks: all-or-nothing acquisition with core deciding on the holders, release, listing, expiry. */
export function exerciseLocks(factory: DriverFactory): void {
  describe('locks', () => {
    const h = eachTest(factory);
    const lock = (id: string, agentId: string, resources: string[], ttlMs = 1_000, now = T0, namespace = 'default') =>
      h.store.lockAcquire({ id, namespace, agentId, resources, ttlMs, description: '', now, decide: (holders) => decideLock(holders, now) });

    it('TakesEveryResourceOrNone and reports the holders of a conflict', async () => {
      const a = await h.agent(['k']);
      const b = await h.agent(['k']);
      const first = await h.store.lockAcquire({ id: 'L1', namespace: 'default', agentId: a, resources: ['f1', 'f2'], ttlMs: 1_000, description: 'edit', now: T0, decide: (hs) => decideLock(hs, T0) });
      assert.ok(first.acquired);
      assert.deepEqual(first.lock, { id: 'L1', namespace: 'default', agentId: a, resources: ['f1', 'f2'], description: 'edit', createdAt: T0, expiresAt: T0 + 1_000 });
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
        id: 'B', namespace: 'default', agentId: a, resources: ['r1', 'free', 'r2'], ttlMs: 100, description: '', now: T0,
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

    const dirLock = (id: string, agentId: string, resources: string[], ttlMs = 1_000, now = T0, namespace = 'default') =>
      h.store.lockAcquire({ id, namespace, agentId, resources, ttlMs, description: '', now, decide: (holders) => decideLock(holders, now), probes: lockProbes(resources) });

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
      const first = await h.store.lockWaitJoin({ namespace: 'default', resources: ['src/', 'b'], deadline: T0 + 1_000, now: T0 });
      const second = await h.store.lockWaitJoin({ namespace: 'default', resources: ['src/x.ts'], deadline: T0 + 2_000, now: T0 });
      const third = await h.store.lockWaitJoin({ namespace: 'default', resources: ['c'], deadline: T0 + 2_000, now: T0 });
      assert.ok(first < second && second < third, 'places in line go up');
      const tryAs = (seq: number, resources: string[], now = T0, go = (ahead: unknown[]) => ahead.length === 0) => {
        let seen: { seq: number; resources: string[]; deadline: number }[] = [];
        const result = h.store.lockAcquire({
          id: `W${seq}-${now}`, namespace: 'default', agentId: a, resources, ttlMs: 100, description: '', now,
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
      const fourth = await h.store.lockWaitJoin({ namespace: 'default', resources: ['d'], deadline: T0 + 5_000, now: T0 + 1_000 });
      assert.deepEqual((await tryAs(Number.MAX_SAFE_INTEGER, ['z3'], T0)).seen.map((w) => w.seq), [fourth]);
    });

    it('HoldsTheSameResourceInTwoNamespacesAtOnce: conflicts, directories and lists stay within one', async () => {
      const a = await h.agent(['k']);
      const b = await h.agent(['k']);
      const mine = await dirLock('N1', a, ['src/a.ts'], 1_000, T0, 'team-a');
      const theirs = await dirLock('N2', b, ['src/a.ts'], 1_000, T0, 'team-b');
      assert.ok(mine.acquired && theirs.acquired, 'the same name is free in another namespace');
      assert.deepEqual([mine.lock.namespace, theirs.lock.namespace], ['team-a', 'team-b']);
      assert.equal((await h.store.lockGet({ id: 'N2' }))?.namespace, 'team-b');
      // Within a namespace it still clashes, with its own holder only.
      const again = await dirLock('N3', b, ['src/a.ts'], 1_000, T0, 'team-a');
      assert.deepEqual(again, { acquired: false, conflicts: [{ resource: 'src/a.ts', lockId: 'N1', agentId: a, expiresAt: T0 + 1_000 }] });
      // A directory in one namespace covers what lies under it there, not in another.
      assert.ok((await dirLock('N4', a, ['lib/'], 1_000, T0, 'team-a')).acquired);
      assert.ok((await dirLock('N5', b, ['lib/x.ts'], 1_000, T0, 'team-b')).acquired, 'a directory lock in team-a does not block team-b');
      assert.equal((await dirLock('N6', b, ['lib/x.ts'], 1_000, T0, 'team-a')).acquired, false);
      assert.equal((await dirLock('N7', a, ['src/'], 1_000, T0, 'team-b')).acquired, false, "team-b's src/a.ts is under it");
      assert.ok((await dirLock('N8', a, ['src/'], 1_000, T0, 'team-c')).acquired, 'nothing of team-c is under it');
      // A lapsed lock is replaced in its own namespace only; the other's stays.
      assert.ok((await dirLock('N9', b, ['src/a.ts'], 1_000, T0 + 1_000, 'team-a')).acquired);
      assert.equal(await h.store.lockGet({ id: 'N1' }), undefined);
      assert.equal((await h.store.lockGet({ id: 'N2' }))?.resources[0], 'src/a.ts');
      const ids = async (namespaces?: readonly string[]) => (await h.store.lockList({ namespaces, limit: 10 })).items.map((l) => l.id);
      assert.deepEqual(await ids(['team-a']), ['N4', 'N9']);
      assert.deepEqual(await ids(['team-b', 'team-c']), ['N2', 'N5', 'N8']);
      assert.deepEqual(await ids([]), [], 'an empty filter lists nothing');
      assert.deepEqual(await ids(), ['N2', 'N4', 'N5', 'N8', 'N9']);
      const page = await h.store.lockList({ namespaces: ['team-b', 'team-c'], agentId: b, limit: 1 });
      assert.deepEqual(page.items.map((l) => l.id), ['N2']);
      const next = await h.store.lockList({ namespaces: ['team-b', 'team-c'], agentId: b, limit: 1, cursor: page.nextCursor! });
      assert.deepEqual([next.items.map((l) => l.id), next.nextCursor], [['N5'], null]);
    });

    it('KeepsOneLineOfWaitingRequestsPerNamespace', async () => {
      const a = await h.agent(['k']);
      const other = await h.store.lockWaitJoin({ namespace: 'team-b', resources: ['src/'], deadline: T0 + 1_000, now: T0 });
      const mine = await h.store.lockWaitJoin({ namespace: 'team-a', resources: ['src/'], deadline: T0 + 1_000, now: T0 });
      const later = await h.store.lockWaitJoin({ namespace: 'team-b', resources: ['src/x.ts'], deadline: T0 + 1_000, now: T0 });
      const ahead = async (namespace: string, seq: number) => {
        let seen: number[] = [];
        await h.store.lockAcquire({
          id: `Q-${namespace}-${seq}`, namespace, agentId: a, resources: ['q'], ttlMs: 100, description: '', now: T0,
          decide: (holders) => decideLock(holders, T0),
          line: { seq, mayGo: (waiting) => ((seen = waiting.map((w) => w.seq)), false) },
        });
        return seen;
      };
      assert.deepEqual(await ahead('team-a', mine), [], "team-b's earlier request is not ahead of team-a's");
      assert.deepEqual(await ahead('team-b', later), [other]);
      assert.deepEqual(await ahead('team-c', Number.MAX_SAFE_INTEGER), []);
    });

    it('TakesATaskLockInItsNamespace: what another namespace holds or waits for does not hold a claim back', async () => {
      const a = await h.agent(['t'], 10);
      const b = await h.agent(['k']);
      const claim = (max: number, now = T0) => h.store.taskClaim({ agentId: a, max, now, plan: planClaim });
      await dirLock('other-ns', b, ['repo/src/a.ts'], 60_000, T0, 'team-b');
      await h.store.lockWaitJoin({ namespace: 'team-b', resources: ['repo/docs/'], deadline: T0 + 60_000, now: T0 });
      const [first, second] = await h.submit(task('t', { locks: ['repo/src/a.ts'] }), task('t', { locks: ['repo/docs/x.md'] }));
      const got = await claim(10);
      assert.deepEqual(got.tasks.map((t) => t.id), [first.id, second.id], 'neither the lock nor the line of team-b is in the way');
      assert.equal((await h.store.lockGet({ id: `task-${first.id}` }))?.namespace, 'default');
      // In its own namespace a lock is in the way, as before.
      await dirLock('mine', b, ['repo/lib/'], 60_000, T0, 'default');
      await h.submit(task('t', { locks: ['repo/lib/z.ts'] }));
      assert.deepEqual((await claim(10, T0 + 1)).tasks, []);
    });
  });
}
