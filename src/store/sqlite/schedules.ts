import { mapPage } from '../keyset.js';
import * as lists from '../lists.js';
import { toSchedule, type ScheduleRow } from '../rows.js';
import type { ScheduleStore } from '../schedule-store.js';
import type { SqliteDatabase } from './database.js';

/** The schedules area of the SQLite driver. */
export function sqliteSchedules(d: SqliteDatabase): ScheduleStore {
  const { db, groupCommit } = d;
  const s = {
    insert: db.prepare(`INSERT INTO schedules (namespace, name, cron, timezone, task, overlap, catch_up, paused, next_fire_at, created_at, updated_at)
      VALUES (@namespace, @name, @cron, @timezone, @task, @overlap, @catch_up, @paused, @next_fire_at, @now, @now)
      ON CONFLICT (namespace, name) DO NOTHING RETURNING *`),
    byName: db.prepare('SELECT * FROM schedules WHERE namespace = ? AND name = ?'),
    delete: db.prepare('DELETE FROM schedules WHERE namespace = ? AND name = ? RETURNING *'),
    setPaused: db.prepare(`UPDATE schedules SET paused = @paused, next_fire_at = @next_fire_at, updated_at = @now
      WHERE namespace = @namespace AND name = @name RETURNING *`),
    due: db.prepare('SELECT * FROM schedules WHERE paused = 0 AND next_fire_at <= ? ORDER BY next_fire_at LIMIT ?'),
    advance: db.prepare(`UPDATE schedules SET next_fire_at = @next_fire_at, last_fire_at = coalesce(@last_fire_at, last_fire_at),
        last_task_id = coalesce(@last_task_id, last_task_id), updated_at = @now
      WHERE namespace = @namespace AND name = @name AND next_fire_at = @from AND paused = 0`),
    nextFire: db.prepare('SELECT min(next_fire_at) FROM schedules WHERE paused = 0').pluck(),
  };
  return {
    scheduleInsert({ schedule: x }) {
      return groupCommit.write(() => {
        const row = s.insert.get({
          namespace: x.namespace,
          name: x.name,
          cron: x.cron,
          timezone: x.timezone,
          task: JSON.stringify(x.task),
          overlap: x.overlap,
          catch_up: x.catchUp,
          paused: x.paused ? 1 : 0,
          next_fire_at: x.nextFireAt,
          now: x.createdAt,
        }) as ScheduleRow | undefined;
        return row && toSchedule(row);
      });
    },
    async scheduleGet(params) {
      const row = s.byName.get(params.namespace, params.name) as ScheduleRow | undefined;
      return row && toSchedule(row);
    },
    async scheduleList(params) {
      return mapPage(await d.page(lists.scheduleList(params)), toSchedule);
    },
    scheduleDelete(params) {
      return groupCommit.write(() => {
        const row = s.delete.get(params.namespace, params.name) as ScheduleRow | undefined;
        return row && toSchedule(row);
      });
    },
    scheduleSetPaused(params) {
      return groupCommit.write(() => {
        const row = s.setPaused.get({ namespace: params.namespace, name: params.name, paused: params.paused ? 1 : 0, next_fire_at: params.nextFireAt, now: params.now }) as ScheduleRow | undefined;
        return row && toSchedule(row);
      });
    },
    async scheduleDue(params) {
      return (s.due.all(params.now, params.limit) as ScheduleRow[]).map(toSchedule);
    },
    scheduleAdvance(p) {
      return groupCommit.write(
        () =>
          s.advance.run({ namespace: p.namespace, name: p.name, from: p.from, next_fire_at: p.nextFireAt, last_fire_at: p.lastFireAt, last_task_id: p.lastTaskId, now: p.now }).changes === 1,
      );
    },
    async scheduleNextFire() {
      return s.nextFire.get() as number | null;
    },
  };
}
