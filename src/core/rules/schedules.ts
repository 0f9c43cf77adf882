import { Cron } from 'croner';
import { invalid } from '../../domain/errors.js';
import type { ScheduleCatchUp } from '../../domain/schedules.js';

/**
 * A schedule's cron expression and time zone, parsed by croner (5 fields, or 6 with seconds first;
 * time zones and daylight-saving changes are croner's): a clear error for either, naming the field.
 */
export function parseCron(cron: string, timezone: string): Cron {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: timezone });
  } catch {
    throw invalid('timezone', `${JSON.stringify(timezone)} is not an IANA time zone (e.g. "Europe/Berlin", "UTC")`);
  }
  const fields = cron.trim().split(/\s+/).length;
  if (fields !== 5 && fields !== 6) {
    throw invalid('cron', `${JSON.stringify(cron)} has ${fields} fields; give 5 (minute hour day month weekday) or 6 (seconds first)`);
  }
  try {
    const parsed = new Cron(cron, { timezone, paused: true });
    if (parsed.nextRun() === null) throw new Error('it never fires');
    return parsed;
  } catch (err) {
    throw invalid('cron', `${JSON.stringify(cron)} does not parse: ${(err as Error).message.replace(/^CronPattern: /, '')}`);
  }
}

/** The first fire time strictly after `after` (null: it never fires again). */
export function nextFireAfter(cron: Cron, after: number): number | null {
  return cron.nextRun(new Date(after))?.getTime() ?? null;
}

/**
 * Which fires of a schedule to submit now, and its next fire time after them. `from` is its first
 * fire not yet handled. A fire due less than `graceMs` ago is on time (late by a busy moment) and is
 * submitted; older ones were missed while no node ran it, and follow `catchUp`: none of them, the
 * latest, or all, at most `maxCatchUp` (the latest ones). Fires in order, oldest first.
 */
export function firesDue(p: { cron: Cron; from: number; now: number; catchUp: ScheduleCatchUp; graceMs: number; maxCatchUp: number }): { fires: number[]; next: number | null } {
  const missedBefore = p.now - p.graceMs;
  const fires: number[] = [];
  if (p.from < missedBefore && p.catchUp !== 'none') {
    const count = p.catchUp === 'latest' ? 1 : p.maxCatchUp;
    // previousRuns: the latest fires before the reference, most recent first; croner counts whole
    // seconds, so the reference is rounded up and the fires at or after missedBefore left out.
    const missed = p.cron
      .previousRuns(count, new Date(Math.ceil(missedBefore / 1000) * 1000))
      .map((d) => d.getTime())
      .filter((t) => t >= p.from && t < missedBefore);
    fires.push(...missed.reverse());
  }
  let t: number | null = p.from >= missedBefore ? p.from : nextFireAfter(p.cron, missedBefore - 1);
  while (t !== null && t <= p.now) {
    if (t >= missedBefore) fires.push(t);
    t = nextFireAfter(p.cron, t);
  }
  return { fires, next: t };
}
