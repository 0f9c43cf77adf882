import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decideLock } from '../../src/core/rules/locks.js';
import { T0, assertCountersEqualRecount, eachTest, rules, task, type DriverFactory } from './harness.js';

/** Agents: registration, listing, heartbeats, staleness, and release of what an agent held. */
export function exerciseAgents(factory: DriverFactory): void {
  describe('agents', () => {
    const h = eachTest(factory);
    const lock = (id: string, agentId: string, resources: string[], ttlMs: number) =>
      h.store.lockAcquire({ id, namespace: 'default', agentId, resources, ttlMs, description: '', now: T0, decide: (holders) => decideLock(holders, T0) });

    it('MarksSilentAgentsStale, then takes them offline ending their leases and dropping their locks', async () => {
      const a = await h.agent(['s'], 10, T0);
      const alive = await h.agent(['s'], 10, T0);
      const [t1, t2] = await h.submit(task('s'), task('s', { maxAttempts: 1 }));
      await h.store.taskClaim({ agentId: a, max: 2, now: T0 });
      await lock('La', a, ['x'], 60_000);
      await h.store.agentHeartbeat({ id: alive, now: T0 + 5_000 });
      assert.deepEqual(await h.store.agentMarkStale({ staleBefore: T0 + 1_000, now: T0 + 5_000, limit: 10 }), [a]);
      assert.equal(await h.store.agentOldestHeartbeat({ status: 'stale' }), T0);
      assert.equal(await h.store.agentOldestHeartbeat({ status: 'online' }), T0 + 5_000);
      const [released] = await h.store.agentReapOffline({ offlineBefore: T0 + 2_000, now: T0 + 6_000, limit: 10, endLease: rules.offline(T0 + 6_000) });
      assert.equal(released.agent.id, a);
      assert.equal(released.agent.status, 'offline');
      assert.deepEqual(released.tasks.map((t) => [t.task.id, t.from, t.task.status]), [[t1.id, 'leased', 'queued'], [t2.id, 'leased', 'dead']]);
      assert.equal((released.tasks[0].task.error as { code: string }).code, 'FLEETD_ERR_AGENT_OFFLINE');
      assert.deepEqual(released.locks.map((l) => l.id), ['La']);
      assert.deepEqual(await h.store.agentReapOffline({ offlineBefore: T0 + 2_000, now: T0 + 6_000, limit: 10, endLease: rules.offline(T0 + 6_000) }), []);
      const back = await h.store.agentHeartbeat({ id: a, now: T0 + 7_000 });
      assert.equal(back?.previousStatus, 'offline');
      assert.equal(back?.agent.status, 'online');
      assert.equal(await h.store.agentHeartbeat({ id: 'ghost', now: T0 }), undefined);
      await assertCountersEqualRecount(h.store);
    });

    it('TouchesTheLastSeenTimesOfOnlineAgentsInOneWrite, never back in time, and answers those not online', async () => {
      const silent = await h.agent(['t'], 10, T0);
      assert.deepEqual(await h.store.agentMarkStale({ staleBefore: T0 + 1, now: T0 + 1, limit: 10 }), [silent]);
      const a = await h.agent(['t'], 10, T0 + 10);
      const b = await h.agent(['t'], 10, T0 + 10);
      const untouched = await h.store.agentTouchMany({
        seen: [
          { id: a, at: T0 + 500 },
          { id: silent, at: T0 + 600 },
          { id: b, at: T0 + 5 },
          { id: 'ghost', at: T0 + 700 },
        ],
      });
      assert.deepEqual(untouched, [silent, 'ghost']);
      const now = async (id: string) => {
        const agent = await h.store.agentGet({ id });
        return [agent?.status, agent?.lastHeartbeatAt];
      };
      assert.deepEqual(await now(a), ['online', T0 + 500]);
      assert.deepEqual(await now(b), ['online', T0 + 10], 'an older time does not move it back');
      assert.deepEqual(await now(silent), ['stale', T0], 'a stale agent comes back only by a heartbeat of its own');
      assert.deepEqual(await h.store.agentTouchMany({ seen: [] }), []);
      await assertCountersEqualRecount(h.store);
    });

    it('ReleasesOneAgentAtOnce: offline, its leases ended as told, its locks gone, others untouched', async () => {
      const a = await h.agent(['g']);
      const b = await h.agent(['g']);
      const [t, other] = await h.submit(task('g'), task('g'));
      await h.store.taskClaim({ agentId: a, max: 1, now: T0 });
      await h.store.taskClaim({ agentId: b, max: 1, now: T0 });
      await lock('Lg', a, ['g1'], 1_000);
      await lock('Lb', b, ['g2'], 1_000);
      const released = await h.store.agentRelease({ id: a, now: T0 + 1, unlessSeenAfter: T0, endLease: () => ({ status: 'scheduled', runAt: T0 + 50, error: 'gone' }) });
      assert.equal(released?.agent.status, 'offline');
      assert.deepEqual(released?.tasks.map((x) => [x.task.id, x.task.status, x.task.runAt]), [[t.id, 'scheduled', T0 + 50]]);
      assert.deepEqual(released?.locks.map((l) => l.id), ['Lg']);
      assert.equal((await h.store.taskGet({ id: other.id }))?.status, 'leased');
      assert.equal((await h.store.lockGet({ id: 'Lb' }))?.agentId, b);
      assert.equal(await h.store.agentRelease({ id: 'nobody', now: T0, endLease: rules.offline(T0), unlessSeenAfter: T0 }), undefined);
      await assertCountersEqualRecount(h.store);
    });

    it('KeepsAnAgentSeenAfterItsDisconnect: a release unlessSeenAfter changes nothing once a later heartbeat was written', async () => {
      const a = await h.agent(['k'], 10, T0);
      const [t] = await h.submit(task('k'));
      await h.store.taskClaim({ agentId: a, max: 1, now: T0 });
      await lock('Lk', a, ['k1'], 60_000);
      await h.store.agentHeartbeat({ id: a, now: T0 + 100 });
      assert.equal(await h.store.agentRelease({ id: a, now: T0 + 200, endLease: rules.offline(T0 + 200), unlessSeenAfter: T0 + 99 }), undefined);
      assert.equal((await h.store.agentGet({ id: a }))?.status, 'online');
      assert.equal((await h.store.taskGet({ id: t.id }))?.status, 'leased');
      assert.equal((await h.store.lockGet({ id: 'Lk' }))?.agentId, a);
      // Seen at the disconnect itself, not after it: released.
      const released = await h.store.agentRelease({ id: a, now: T0 + 200, endLease: rules.offline(T0 + 200), unlessSeenAfter: T0 + 100 });
      assert.equal(released?.agent.status, 'offline');
      assert.deepEqual(released?.tasks.map((x) => [x.task.id, x.task.status]), [[t.id, 'queued']]);
      assert.deepEqual(released?.locks.map((l) => l.id), ['Lk']);
      await assertCountersEqualRecount(h.store);
    });

    it('DeletesAnAgentReleasingWhatItHeld', async () => {
      const a = await h.agent(['d']);
      const [t] = await h.submit(task('d'));
      await h.store.taskClaim({ agentId: a, max: 1, now: T0 });
      await lock('Ld', a, ['y'], 1_000);
      const released = await h.store.agentDelete({ id: a, now: T0 + 1, endLease: rules.offline(T0 + 1) });
      assert.deepEqual(released?.tasks.map((x) => [x.task.id, x.task.status]), [[t.id, 'queued']]);
      assert.deepEqual(released?.locks.map((l) => l.id), ['Ld']);
      assert.equal(await h.store.agentGet({ id: a }), undefined);
      assert.equal(await h.store.agentDelete({ id: a, now: T0, endLease: rules.offline(T0) }), undefined);
      await assertCountersEqualRecount(h.store);
    });

    it('KeepsEachAgentInItsNamespace: found by token with it, listed and counted by it', async () => {
      const d = await h.agent(['x']);
      const a = await h.agent(['x'], 10, T0, 'team-a');
      const b = await h.agent(['y'], 10, T0, 'team-b');
      assert.equal((await h.store.agentGet({ id: a }))?.namespace, 'team-a');
      assert.deepEqual(await h.store.agentByTokenHash({ hash: `hash-${b}` }), { id: b, namespace: 'team-b' });
      const listed = async (params: { namespaces?: readonly string[]; capability?: string }) => (await h.store.agentList({ limit: 10, ...params })).items.map((x) => x.id);
      assert.deepEqual(await listed({}), [d, a, b]);
      assert.deepEqual(await listed({ namespaces: ['team-a', 'team-b'] }), [a, b]);
      assert.deepEqual(await listed({ namespaces: ['team-a'], capability: 'x' }), [a]);
      assert.deepEqual(await listed({ namespaces: ['team-b'], capability: 'x' }), []);
      await h.store.agentTouchMany({ seen: [a, b].map((id) => ({ id, at: T0 + 5 })) });
      await h.store.agentMarkStale({ staleBefore: T0 + 1, now: T0 + 1, limit: 10 });
      const counted = async (namespaces?: readonly string[]) =>
        (await h.store.agentCounts({ namespaces })).filter((c) => Number(c.count) > 0).map((c) => `${c.status}:${Number(c.count)}`).sort();
      assert.deepEqual(await counted(), ['online:2', 'stale:1']);
      assert.deepEqual(await counted(['team-a', 'team-b']), ['online:2']);
      assert.deepEqual(await counted(['default']), ['stale:1']);
      assert.deepEqual(await counted(['nobody']), []);
    });

    it('StoresAgentsWithTheirTokenHashAndListsThemByCapabilityAndStatus', async () => {
      const ids = [];
      for (let i = 0; i < 7; i++) ids.push(await h.agent(i % 2 ? ['odd', 'all'] : ['all']));
      const got = await h.store.agentGet({ id: ids[0] });
      assert.deepEqual(got?.labels, { role: 'test' });
      assert.deepEqual(got?.capabilities, ['all']);
      assert.deepEqual(await h.store.agentByTokenHash({ hash: `hash-${ids[0]}` }), { id: ids[0], namespace: 'default' });
      assert.equal(await h.store.agentByTokenHash({ hash: 'hash-nobody' }), undefined);
      const odd = await h.store.agentList({ capability: 'odd', limit: 2 });
      assert.deepEqual(odd.items.map((a) => a.id), [ids[1], ids[3]]);
      const odd2 = await h.store.agentList({ capability: 'odd', limit: 2, cursor: odd.nextCursor! });
      assert.deepEqual(odd2.items.map((a) => a.id), [ids[5]]);
      assert.equal(odd2.nextCursor, null);
      await h.store.agentMarkStale({ staleBefore: T0 + 1, now: T0 + 1, limit: 3 });
      assert.equal((await h.store.agentList({ status: 'stale', limit: 10 })).items.length, 3);
      await assertCountersEqualRecount(h.store);
    });
  });
}
