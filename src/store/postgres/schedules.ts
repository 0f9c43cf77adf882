import { mapPage } from '../keyset.js';
import * as lists from '../lists.js';
import { toSchedule, type ScheduleRow } from '../rows.js';
import type { ScheduleStore } from '../schedule-store.js';
import type { PostgresDatabase } from './database.js';

/** The schedules area of the PostgreSQL driver. */
export function postgresSchedules(db: PostgresDatabase): ScheduleStore {
  const one = async (text: string, values: unknown[]) => {
    const [row] = await db.query<ScheduleRow>(text, values);
    return row && toSchedule(row);
  };
  return {
    scheduleInsert({ schedule: x }) {
      return one(
        `INSERT INTO schedules (name, cron, timezone, task, overlap, catch_up, paused, next_fire_at, created_at, updated_at, namespace)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10) ON CONFLICT (namespace, name) DO NOTHING RETURNING *`,
        [x.name, x.cron, x.timezone, JSON.stringify(x.task), x.overlap, x.catchUp, x.paused ? 1 : 0, x.nextFireAt, x.createdAt, x.namespace],
      );
    },
    scheduleGet(params) {
      return one('SELECT * FROM schedules WHERE namespace = $1 AND name = $2', [params.namespace, params.name]);
    },
    async scheduleList(params) {
      return mapPage(await db.page(lists.scheduleList(params)), toSchedule);
    },
    scheduleDelete(params) {
      return one('DELETE FROM schedules WHERE namespace = $1 AND name = $2 RETURNING *', [params.namespace, params.name]);
    },
    scheduleSetPaused(params) {
      return one('UPDATE schedules SET paused = $2, next_fire_at = $3, updated_at = $4 WHERE name = $1 AND namespace = $5 RETURNING *', [
        params.name,
        params.paused ? 1 : 0,
        params.nextFireAt,
        params.now,
        params.namespace,
      ]);
    },
    async scheduleDue(params) {
      const rows = await db.query<ScheduleRow>('SELECT * FROM schedules WHERE paused = 0 AND next_fire_at <= $1 ORDER BY next_fire_at LIMIT $2', [params.now, params.limit]);
      return rows.map(toSchedule);
    },
    async scheduleAdvance(p) {
      const rows = await db.query<{ name: string }>(
        `UPDATE schedules SET next_fire_at = $3, last_fire_at = coalesce($4, last_fire_at), last_task_id = coalesce($5, last_task_id), updated_at = $6
         WHERE namespace = $7 AND name = $1 AND next_fire_at = $2 AND paused = 0 RETURNING name`,
        [p.name, p.from, p.nextFireAt, p.lastFireAt, p.lastTaskId, p.now, p.namespace],
      );
      return rows.length === 1;
    },
    async scheduleNextFire() {
      const [row] = await db.query<{ next: number | null }>('SELECT min(next_fire_at) AS next FROM schedules WHERE paused = 0');
      return row.next === null ? null : Number(row.next);
    },
  };
}
