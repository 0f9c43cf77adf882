import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Schedule } from '../../src/domain/schedules.js';
import { T0, eachTest, type DriverFactory } from './harness.js';

const schedule = (name: string, nextFireAt: number, extra: Partial<Schedule> = {}) => ({
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
      assert.equal((await h.store.scheduleGet({ name: 'a' }))?.cron, '* * * * * *');
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
      const resumed = await h.store.scheduleSetPaused({ name: 'paused', paused: false, nextFireAt: T0 + 500, now: T0 + 1 });
      assert.equal(resumed?.paused, false);
      assert.equal(await h.store.scheduleNextFire(), T0 + 500);
      assert.equal(await h.store.scheduleSetPaused({ name: 'nope', paused: true, nextFireAt: 0, now: T0 }), undefined);
    });

    it('AdvancesOnlyFromTheFireTimeItWasRead at, so that two nodes move it on once', async () => {
      await h.store.scheduleInsert({ schedule: schedule('s', T0 + 1_000) });
      const moves = await Promise.all(
        [1, 2].map(() => h.store.scheduleAdvance({ name: 's', from: T0 + 1_000, nextFireAt: T0 + 2_000, lastFireAt: T0 + 1_000, lastTaskId: 7, now: T0 + 1_001 })),
      );
      assert.deepEqual(moves.sort(), [false, true]);
      const after = await h.store.scheduleGet({ name: 's' });
      assert.deepEqual([after?.nextFireAt, after?.lastFireAt, after?.lastTaskId, after?.updatedAt], [T0 + 2_000, T0 + 1_000, 7, T0 + 1_001]);
      // Nothing fired (every fire skipped): the last fire and task stay.
      assert.equal(await h.store.scheduleAdvance({ name: 's', from: T0 + 2_000, nextFireAt: T0 + 3_000, lastFireAt: null, lastTaskId: null, now: T0 + 2_001 }), true);
      assert.equal((await h.store.scheduleGet({ name: 's' }))?.lastTaskId, 7);
      await h.store.scheduleSetPaused({ name: 's', paused: true, nextFireAt: T0 + 3_000, now: T0 });
      assert.equal(await h.store.scheduleAdvance({ name: 's', from: T0 + 3_000, nextFireAt: T0 + 4_000, lastFireAt: null, lastTaskId: null, now: T0 }), false, 'a paused schedule is not moved on');
    });

    it('DeletesOnce', async () => {
      await h.store.scheduleInsert({ schedule: schedule('gone', T0) });
      assert.equal((await h.store.scheduleDelete({ name: 'gone' }))?.name, 'gone');
      assert.equal(await h.store.scheduleDelete({ name: 'gone' }), undefined);
      assert.equal(await h.store.scheduleNextFire(), null);
    });
  });
}
