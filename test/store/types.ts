import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { planClaim } from '../../src/core/rules/admission.js';
import type { TypePolicy } from '../../src/domain/type-policies.js';
import { T0, eachTest, rules, task, written, type DriverFactory, payloadOf } from './harness.js';

const policy = (p: Partial<TypePolicy>): TypePolicy => ({ maxConcurrency: null, maxConcurrencyPerKey: null, rateLimit: null, keyWeights: {}, ...p });

/** Fair sharing: concurrency keys taken in turns, type policies and pauses, all inside the claim. */
export function exerciseTypes(factory: DriverFactory): void {
  describe('types (fair sharing)', () => {
    const h = eachTest(factory);
    const claim = (agentId: string, max: number, now = T0) => h.store.taskClaim({ agentId, max, now, plan: planClaim });

    it('TakesTurnsAcrossConcurrencyKeys at equal priority, priority still first', async () => {
      const a = await h.agent(['t'], 100);
      await h.submit(...Array.from({ length: 6 }, (_, i) => task('t', { payload: `big-${i}`, concurrencyKey: 'big' })));
      await h.submit(task('t', { payload: 'small-0', concurrencyKey: 'small' }), task('t', { payload: 'small-1', concurrencyKey: 'small' }));
      await h.submit(task('t', { payload: 'urgent', priority: 5, concurrencyKey: 'big' }));
      const got = (await claim(a, 5)).tasks.map((t) => payloadOf(t));
      assert.equal(got[0], 'urgent');
      // After the urgent one, big has been served once: small goes next, then they alternate.
      assert.deepEqual(got.slice(1), ['small-0', 'big-0', 'small-1', 'big-1']);
      const one = await claim(a, 1);
      assert.deepEqual(one.tasks.map((t) => t.concurrencyKey), ['big']);
    });

    it('TurnsCarryAcrossClaimsOfOneTask each', async () => {
      const a = await h.agent(['t'], 100);
      await h.submit(...Array.from({ length: 10 }, () => task('t', { concurrencyKey: 'a' })));
      await h.submit(...Array.from({ length: 3 }, () => task('t', { concurrencyKey: 'b' })));
      await h.submit(...Array.from({ length: 3 }, () => task('t', { concurrencyKey: 'c' })));
      const keys: (string | null)[] = [];
      for (let i = 0; i < 9; i++) keys.push(...(await claim(a, 1)).tasks.map((t) => t.concurrencyKey));
      for (let round = 0; round < 3; round++) assert.deepEqual(new Set(keys.slice(round * 3, round * 3 + 3)), new Set(['a', 'b', 'c']), `round ${round}: ${keys}`);
    });

    it('HoldsBackBeyondMaxConcurrency and hands out when a lease ends, no attempt spent', async () => {
      const a = await h.agent(['t'], 100);
      await h.store.typePolicyPut({ namespace: 'default', type: 't', policy: policy({ maxConcurrency: 2 }), now: T0 });
      const made = await h.submit(...Array.from({ length: 5 }, () => task('t')));
      const first = await claim(a, 10);
      assert.equal(first.tasks.length, 2);
      assert.deepEqual(first.heldBack, { t: 3 });
      assert.equal((await claim(a, 10)).tasks.length, 0);
      written(await h.store.taskComplete({ id: first.tasks[0].id, agentId: a, result: null, now: T0 + 1 }));
      const next = await claim(a, 10, T0 + 2);
      assert.equal(next.tasks.length, 1);
      const held = await h.store.taskGet({ id: made[4].id });
      assert.equal(held?.status, 'queued');
      assert.equal(held?.attempts, 0);
    });

    it('HoldsBackBeyondMaxConcurrencyPerKey while other keys go', async () => {
      const a = await h.agent(['t'], 100);
      await h.store.typePolicyPut({ namespace: 'default', type: 't', policy: policy({ maxConcurrencyPerKey: 1 }), now: T0 });
      await h.submit(...Array.from({ length: 3 }, () => task('t', { concurrencyKey: 'x' })), ...Array.from({ length: 3 }, () => task('t', { concurrencyKey: 'y' })));
      const got = await claim(a, 10);
      assert.deepEqual(got.tasks.map((t) => t.concurrencyKey).sort(), ['x', 'y']);
      const overview = await h.store.typeOverview({ now: T0, type: 't' });
      const plan = planClaim(overview.state, overview.groups, T0);
      assert.deepEqual(overview.groups.map((g) => plan.hold(g)), overview.groups.map(() => 'maxConcurrencyPerKey'));
    });

    it('RateLimitsStartsPerWindow and says when the window frees', async () => {
      const a = await h.agent(['t'], 100);
      await h.store.typePolicyPut({ namespace: 'default', type: 't', policy: policy({ rateLimit: { count: 2, perMs: 1_000, perKey: false } }), now: T0 });
      await h.submit(...Array.from({ length: 5 }, () => task('t')));
      const first = await claim(a, 10);
      assert.equal(first.tasks.length, 2);
      assert.equal(first.retryAt, T0 + 1_000);
      for (const t of first.tasks) written(await h.store.taskComplete({ id: t.id, agentId: a, result: null, now: T0 + 1 }));
      assert.equal((await claim(a, 10, T0 + 999)).tasks.length, 0, 'completions do not free a rate window');
      assert.equal((await claim(a, 10, T0 + 1_000)).tasks.length, 2);
    });

    it('PausedTypeStaysQueued, a key pause holds only that key, and both end', async () => {
      const a = await h.agent(['t'], 100);
      await h.submit(task('t', { concurrencyKey: 'x' }), task('t', { concurrencyKey: 'y' }));
      await h.store.typePause({ namespace: 'default', type: 't', key: null, until: T0 + 500, reason: '429', now: T0 });
      const paused = await claim(a, 10);
      assert.equal(paused.tasks.length, 0);
      assert.equal(paused.retryAt, T0 + 500);
      await h.store.typePause({ namespace: 'default', type: 't', key: 'x', until: null, reason: null, now: T0 });
      const later = await claim(a, 10, T0 + 500);
      assert.deepEqual(later.tasks.map((t) => t.concurrencyKey), ['y']);
      const ended = await h.store.typeResume({ namespace: 'default', type: 't', key: null, allKeys: true });
      assert.deepEqual(ended.map((p) => p.key ?? '(type)').sort(), ['(type)', 'x'], "every pause of the type ends, the lapsed one too");
      assert.deepEqual((await claim(a, 10, T0 + 501)).tasks.map((t) => t.concurrencyKey), ['x']);
    });

    it('AChangedPolicyAppliesToTheNextClaim and revokes no lease', async () => {
      const a = await h.agent(['t'], 100);
      await h.submit(...Array.from({ length: 4 }, () => task('t')));
      assert.equal((await claim(a, 3)).tasks.length, 3);
      await h.store.typePolicyPut({ namespace: 'default', type: 't', policy: policy({ maxConcurrency: 1 }), now: T0 });
      assert.equal((await claim(a, 3)).tasks.length, 0);
      const leased = (await h.store.taskList({ status: 'leased', limit: 10 })).items;
      assert.equal(leased.length, 3);
      assert.equal((await h.store.typePolicyGet({ namespace: 'default', type: 't' }))?.policy.maxConcurrency, 1);
    });

    it('ReleasesALeaseForLaterWithoutSpendingAnAttempt, only for its holder', async () => {
      const a = await h.agent(['t'], 100);
      const b = await h.agent(['t'], 100);
      await h.submit(task('t'));
      const [leased] = (await claim(a, 1)).tasks;
      assert.equal(leased.attempts, 1);
      const wrong = await h.store.taskRelease({ id: leased.id, agentId: b, now: T0 + 1, status: 'queued', runAt: T0 + 1, error: 'x' });
      assert.equal(wrong.task, undefined);
      assert.equal(wrong.current?.status, 'leased');
      const back = written(await h.store.taskRelease({ id: leased.id, agentId: a, now: T0 + 1, status: 'scheduled', runAt: T0 + 500, error: { code: 'FLEETD_ERR_RELEASED' } }));
      assert.equal(back.status, 'scheduled');
      assert.equal(back.attempts, 0);
      assert.equal(back.runAt, T0 + 500);
      assert.equal(back.leaseExpiresAt, null);
      assert.deepEqual(back.error, { code: 'FLEETD_ERR_RELEASED' });
      assert.equal((await h.store.taskPromoteScheduled({ now: T0 + 500, limit: 10 })).length, 1);
      assert.equal((await claim(b, 1, T0 + 500)).tasks[0].attempts, 1);
    });

    it('LeasesATaskWithItsLocksOnly, keeps it queued while they are held, and frees them with the lease', async () => {
      const a = await h.agent(['t'], 100);
      const b = await h.agent(['t'], 100);
      const [wide] = await h.submit(task('t', { locks: ['repo/src/'] }));
      const [narrow, free] = await h.submit(task('t', { locks: ['repo/src/a.ts', 'repo/docs/'] }), task('t'));
      const first = await claim(a, 1);
      assert.deepEqual(first.tasks.map((t) => t.id), [wide.id]);
      assert.deepEqual(first.tasks[0].locks, ['repo/src/']);
      const held = await h.store.lockGet({ id: `task-${wide.id}` });
      assert.deepEqual([held?.agentId, held?.resources], [a, ['repo/src/']]);
      const second = await claim(b, 10);
      assert.deepEqual(second.tasks.map((t) => t.id), [free.id], 'the task whose file is under a held directory waits; the free one goes');
      assert.deepEqual(second.heldBack, { t: 1 });
      assert.equal((await h.store.taskGet({ id: narrow.id }))?.attempts, 0);
      written(await h.store.taskComplete({ id: wide.id, agentId: a, result: null, now: T0 + 1 }));
      assert.equal(await h.store.lockGet({ id: `task-${wide.id}` }), undefined, 'the lock went with the lease');
      const third = await claim(b, 10, T0 + 2);
      assert.deepEqual(third.tasks.map((t) => t.id), [narrow.id]);
      // A lease that ends without a result frees its locks too.
      await h.store.taskFail({ id: narrow.id, agentId: b, now: T0 + 3, endLease: rules.failed(T0 + 3, false) });
      assert.equal(await h.store.lockGet({ id: `task-${narrow.id}` }), undefined);
    });

    it('KeepsATaskWhoseLocksALockRequestWaitsForQueuedBehindIt, and hands it out once the request has left the line', async () => {
      const a = await h.agent(['t'], 100);
      const waiting = await h.store.lockWaitJoin({ namespace: 'default', resources: ['repo/src/'], deadline: T0 + 60_000, now: T0 });
      const [behind, other] = await h.submit(task('t', { locks: ['repo/src/a.ts'] }), task('t', { locks: ['repo/docs/'] }));
      const first = await claim(a, 10);
      assert.deepEqual(first.tasks.map((t) => t.id), [other.id], 'the task under the directory a request waits for stays queued; the other goes');
      assert.deepEqual(first.heldBack, { t: 1 });
      assert.equal(first.retryAt, T0 + 60_000, 'tried again at the deadline of the request in its way, should that request never come back');
      assert.equal(await h.store.lockGet({ id: `task-${behind.id}` }), undefined, 'nothing taken for it');
      await h.store.lockWaitLeave({ seq: waiting });
      assert.deepEqual((await claim(a, 10, T0 + 1)).tasks.map((t) => t.id), [behind.id]);
    });

    it('KnowsATypeByItsTasksOrItsPolicy', async () => {
      assert.equal(await h.store.typeExists({ namespace: 'default', type: 'ghost' }), false);
      await h.submit(task('real'));
      await h.store.typePolicyPut({ namespace: 'default', type: 'planned', policy: policy({ maxConcurrency: 1 }), now: T0 });
      assert.equal(await h.store.typeExists({ namespace: 'default', type: 'real' }), true);
      assert.equal(await h.store.typeExists({ namespace: 'default', type: 'planned' }), true);
    });

    it("APolicyIsItsNamespaces: team-a's limit and pause of a type hold back none of another namespace's tasks of that name", async () => {
      const a = await h.agent(['t'], 100);
      const b = await h.agent(['t'], 100, T0, 'team-b');
      await h.store.typePolicyPut({ namespace: 'default', type: 't', policy: policy({ maxConcurrency: 1 }), now: T0 });
      await h.submit(...Array.from({ length: 3 }, () => task('t')), ...Array.from({ length: 3 }, () => task('t', { namespace: 'team-b' })));
      const mine = await claim(a, 10);
      assert.equal(mine.tasks.length, 1, "default's limit holds default's tasks");
      assert.deepEqual(mine.heldBack, { t: 2 });
      const theirs = await claim(b, 10);
      assert.equal(theirs.tasks.length, 3, "team-b has no policy for t: default's limit holds none of its tasks");
      assert.ok(theirs.tasks.every((t) => t.namespace === 'team-b'));

      await h.store.typePause({ namespace: 'team-b', type: 't', key: null, until: null, reason: 'theirs', now: T0 });
      await h.submit(task('t', { namespace: 'team-b' }));
      assert.equal((await claim(b, 10, T0 + 1)).tasks.length, 0, "team-b's pause holds team-b's task");
      written(await h.store.taskComplete({ id: mine.tasks[0].id, agentId: a, result: null, now: T0 + 2 }));
      assert.equal((await claim(a, 10, T0 + 3)).tasks.length, 1, "team-b's pause holds none of default's");

      const overview = await h.store.typeOverview({ now: T0 + 3, type: 't' });
      const plan = planClaim(overview.state, overview.groups, T0 + 3);
      assert.deepEqual(
        overview.groups.map((g) => [g.namespace, plan.hold(g)]).sort(),
        [['default', 'maxConcurrency'], ['team-b', 'paused']],
      );
      assert.deepEqual(await h.store.typeResume({ namespace: 'default', type: 't', key: null, allKeys: true }), [], "default's resume ends none of team-b's pauses");
      assert.equal((await h.store.typePolicyGet({ namespace: 'team-b', type: 't' })), undefined);
      assert.equal(await h.store.typeExists({ namespace: 'team-b', type: 't' }), true);
      assert.equal(await h.store.typeExists({ namespace: 'team-c', type: 't' }), false, 'no task and no policy of t in team-c');
    });

    it("TakesTurnsPerNamespace: one namespace's turns move neither the passes nor the clock of another", async () => {
      const a = await h.agent(['t'], 100);
      const b = await h.agent(['t'], 100, T0, 'team-b');
      // team-b serves its key x five times: x's pass and team-b's clock move on.
      await h.submit(...Array.from({ length: 5 }, () => task('t', { namespace: 'team-b', concurrencyKey: 'x' })));
      assert.equal((await claim(b, 10)).tasks.length, 5);
      // In default, x and y have had no turn: x goes first (equal turns, by name), then y.
      await h.submit(...Array.from({ length: 2 }, () => task('t', { concurrencyKey: 'y' })), ...Array.from({ length: 2 }, () => task('t', { concurrencyKey: 'x' })));
      assert.deepEqual((await claim(a, 4)).tasks.map((t) => t.concurrencyKey), ['x', 'y', 'x', 'y']);
    });

    it('CountsUsagePerNamespace', async () => {
      await h.store.usageRecord({ namespace: 'default', type: 't', key: 'k', usage: { inputTokens: 10, costUsd: 0.5 }, now: T0 });
      await h.store.usageRecord({ namespace: 'team-b', type: 't', key: 'k', usage: { inputTokens: 100, costUsd: 2 }, now: T0 });
      const window = { hourFrom: T0 - 1_000, dayFrom: T0 - 2_000 };
      assert.equal((await h.store.usageSummary({ namespace: 'team-b', type: 't', ...window })).hour.inputTokens, 100);
      assert.equal((await h.store.usageSummary({ namespace: 'default', type: 't', ...window })).keys[0].day.costUsd, 0.5);
      const inDefault = await h.store.usageTotals({ namespaces: ['default'], ...window });
      assert.deepEqual(inDefault.types.map((t) => [t.type, t.hour.inputTokens]), [['t', 10]]);
      const all = await h.store.usageTotals(window);
      assert.deepEqual(all.types.map((t) => [t.type, t.hour.inputTokens, t.keys.map((k) => [k.key, k.hour.inputTokens])]), [['t', 110, [['k', 110]]]]);
      assert.equal(all.day.costUsd, 2.5);
    });

    it('ReturnsHeldTasksToTheQueueWithTheirKey when a lease ends without a result', async () => {
      const a = await h.agent(['t'], 100);
      await h.store.typePolicyPut({ namespace: 'default', type: 't', policy: policy({ maxConcurrencyPerKey: 1 }), now: T0 });
      await h.submit(task('t', { concurrencyKey: 'k' }), task('t', { concurrencyKey: 'k' }));
      const [first] = (await claim(a, 10)).tasks;
      await h.store.taskFail({ id: first.id, agentId: a, now: T0 + 1, endLease: rules.failed(T0 + 1, true) });
      // The failed one backs off (scheduled); the other of its key may go now.
      assert.equal((await claim(a, 10, T0 + 2)).tasks.length, 1);
    });
  });
}
