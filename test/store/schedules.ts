import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Schedule } from '../../src/domain/schedules.js';
import { T0, eachTest, type DriverFactory } from './harness.js';

const schedule = (name: string, nextFireAt: number, extra: Partial<Schedule> = {}) => ({
  namespace: 'default',
  name,
  cron: '* * * * * *',
  timezone: 'UTC',
  task: { type: 'tick', payload: { name } },
  overlap: 'allow' as const,
  catchUp: 'latest' as const,
  paused: false,
  nextFireAt,
  createdAt: T0,
  ...extra,
});

/** Recurring schedules: names unique, due ones found, moved on once by compare-and-set, paused. */
export function exerciseSchedules(factory: DriverFactory): void {
  describe('schedules', () => {
    const h = eachTest(factory);

    it('InsertsByNameOnce, and lists oldest first in pages', async () => {
      const first = await h.store.scheduleInsert({ schedule: schedule('a', T0 + 1_000) });
      assert.deepEqual(first, { ...schedule('a', T0 + 1_000), lastFireAt: null, lastTaskId: null, updatedAt: T0 });
      assert.equal(await h.store.scheduleInsert({ schedule: schedule('a', T0 + 5_000, { cron: '0 * * * *' }) }), undefined, 'the name is taken');
      assert.equal((await h.store.scheduleGet({ namespace: 'default', name: 'a' }))?.cron, '* * * * * *');
      await h.store.scheduleInsert({ schedule: schedule('b', T0 + 2_000) });
      await h.store.scheduleInsert({ schedule: schedule('c', T0 + 3_000) });
      const page = await h.store.scheduleList({ limit: 2 });
      const rest = await h.store.scheduleList({ limit: 2, cursor: page.nextCursor! });
      assert.deepEqual([...page.items, ...rest.items].map((s) => s.name), ['a', 'b', 'c']);
      assert.equal(rest.nextCursor, null);
    });

    it('FindsDueSchedulesEarliestFirst, not paused ones, and the next fire time', async () => {
      await h.store.scheduleInsert({ schedule: schedule('late', T0 + 2_000) });
      await h.store.scheduleInsert({ schedule: schedule('early', T0 + 1_000) });
      await h.store.scheduleInsert({ schedule: schedule('paused', T0, { paused: true }) });
      assert.equal(await h.store.scheduleNextFire(), T0 + 1_000);
      assert.deepEqual((await h.store.scheduleDue({ now: T0 + 5_000, limit: 10 })).map((s) => s.name), ['early', 'late']);
      assert.deepEqual((await h.store.scheduleDue({ now: T0 + 1_500, limit: 10 })).map((s) => s.name), ['early']);
      const resumed = await h.store.scheduleSetPaused({ namespace: 'default', name: 'paused', paused: false, nextFireAt: T0 + 500, now: T0 + 1 });
      assert.equal(resumed?.paused, false);
      assert.equal(await h.store.scheduleNextFire(), T0 + 500);
      assert.equal(await h.store.scheduleSetPaused({ namespace: 'default', name: 'nope', paused: true, nextFireAt: 0, now: T0 }), undefined);
    });

    it('AdvancesOnlyFromTheFireTimeItWasRead at, so that two nodes move it on once', async () => {
      await h.store.scheduleInsert({ schedule: schedule('s', T0 + 1_000) });
      const moves = await Promise.all(
        [1, 2].map(() => h.store.scheduleAdvance({ namespace: 'default', name: 's', from: T0 + 1_000, nextFireAt: T0 + 2_000, lastFireAt: T0 + 1_000, lastTaskId: 7, now: T0 + 1_001 })),
      );
      assert.deepEqual(moves.sort(), [false, true]);
      const after = await h.store.scheduleGet({ namespace: 'default', name: 's' });
      assert.deepEqual([after?.nextFireAt, after?.lastFireAt, after?.lastTaskId, after?.updatedAt], [T0 + 2_000, T0 + 1_000, 7, T0 + 1_001]);
      // Nothing fired (every fire skipped): the last fire and task stay.
      assert.equal(await h.store.scheduleAdvance({ namespace: 'default', name: 's', from: T0 + 2_000, nextFireAt: T0 + 3_000, lastFireAt: null, lastTaskId: null, now: T0 + 2_001 }), true);
      assert.equal((await h.store.scheduleGet({ namespace: 'default', name: 's' }))?.lastTaskId, 7);
      await h.store.scheduleSetPaused({ namespace: 'default', name: 's', paused: true, nextFireAt: T0 + 3_000, now: T0 });
      assert.equal(await h.store.scheduleAdvance({ namespace: 'default', name: 's', from: T0 + 3_000, nextFireAt: T0 + 4_000, lastFireAt: null, lastTaskId: null, now: T0 }), false, 'a paused schedule is not moved on');
    });

    it('NamesSchedulesWithinTheirNamespace: the same name in two, each found, listed, paused, moved on and deleted apart', async () => {
      const inA = await h.store.scheduleInsert({ schedule: schedule('nightly', T0 + 1_000, { namespace: 'team-a' }) });
      const inB = await h.store.scheduleInsert({ schedule: schedule('nightly', T0 + 2_000, { namespace: 'team-b' }) });
      assert.deepEqual([inA?.namespace, inB?.namespace], ['team-a', 'team-b'], 'the name is free in another namespace');
      assert.equal(await h.store.scheduleInsert({ schedule: schedule('nightly', T0, { namespace: 'team-a' }) }), undefined, 'but taken in its own');
      assert.equal((await h.store.scheduleGet({ namespace: 'team-b', name: 'nightly' }))?.nextFireAt, T0 + 2_000);
      assert.equal(await h.store.scheduleGet({ namespace: 'default', name: 'nightly' }), undefined);
      await h.store.scheduleInsert({ schedule: schedule('hourly', T0 + 3_000, { namespace: 'team-b' }) });
      const names = async (namespaces?: readonly string[]) => (await h.store.scheduleList({ namespaces, limit: 10 })).items.map((s) => `${s.namespace}/${s.name}`);
      assert.deepEqual(await names(['team-b']), ['team-b/nightly', 'team-b/hourly']);
      assert.deepEqual(await names(), ['team-a/nightly', 'team-b/nightly', 'team-b/hourly']);
      assert.deepEqual(await names(['team-c']), []);
      // Due schedules are those of every namespace: every node fires them all.
      assert.deepEqual((await h.store.scheduleDue({ now: T0 + 5_000, limit: 10 })).map((s) => s.namespace), ['team-a', 'team-b', 'team-b']);
      assert.equal((await h.store.scheduleSetPaused({ namespace: 'team-a', name: 'nightly', paused: true, nextFireAt: T0 + 1_000, now: T0 }))?.paused, true);
      assert.equal((await h.store.scheduleGet({ namespace: 'team-b', name: 'nightly' }))?.paused, false, "the other namespace's is not paused");
      assert.equal(await h.store.scheduleAdvance({ namespace: 'team-b', name: 'nightly', from: T0 + 2_000, nextFireAt: T0 + 4_000, lastFireAt: T0 + 2_000, lastTaskId: 9, now: T0 }), true);
      assert.equal((await h.store.scheduleGet({ namespace: 'team-a', name: 'nightly' }))?.lastTaskId, null, "moving one on leaves the other's alone");
      assert.equal(await h.store.scheduleDelete({ namespace: 'team-c', name: 'nightly' }), undefined);
      assert.equal((await h.store.scheduleDelete({ namespace: 'team-a', name: 'nightly' }))?.namespace, 'team-a');
      assert.equal((await h.store.scheduleGet({ namespace: 'team-b', name: 'nightly' }))?.lastTaskId, 9);
    });

    it('DeletesOnce', async () => {
      await h.store.scheduleInsert({ schedule: schedule('gone', T0) });
      assert.equal((await h.store.scheduleDelete({ namespace: 'default', name: 'gone' }))?.name, 'gone');
      assert.equal(await h.store.scheduleDelete({ namespace: 'default', name: 'gone' }), undefined);
      assert.equal(await h.store.scheduleNextFire(), null);
    });
  });
}
