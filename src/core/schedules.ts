import { FleetError, invalid, notFound } from '../domain/errors.js';
import type { Schedule, ScheduleCatchUp, ScheduleOverlap } from '../domain/schedules.js';
import { TERMINAL_STATUSES, type Page } from '../domain/types.js';
import type { FleetContext } from './context.js';
import { DEFAULT_NAMESPACE } from '../domain/namespaces.js';
import type { ScheduleListParams } from '../store/schedule-store.js';
import { DeadlineService } from './maintenance/deadline-service.js';
import { firesDue, nextFireAfter, parseCron } from './rules/schedules.js';
import type { TaskInput, TaskService } from './tasks.js';

export interface ScheduleInput {
  /** Where it lives (its name is unique there) and where every task it fires goes. */
  namespace: string;
  name: string;
  cron: string;
  timezone?: string;
  /** The task each fire submits (no runAt, delay or idempotency key: the fire gives those; nor a namespace: the schedule's). */
  task: Omit<TaskInput, 'runAt' | 'idempotencyKey' | 'namespace'>;
  overlap?: ScheduleOverlap;
  catchUp?: ScheduleCatchUp;
}

/** A schedule with its next fire times, as the API shows it. */
export type ScheduleView = Schedule & { nextFires: number[] };

const SHOWN_FIRES = 5;

/**
 * The idempotency key of one fire: the same on every node, so that each fire is submitted once.
 * Schedules of the same name in two namespaces fire apart: the namespace is in the key (but for
 * `default`, whose keys stay as they were before namespaces, so that a fire in flight across the
 * upgrade is still submitted once). A namespace has no `/`, so `<namespace>/<name>` reads one way.
 */
export const fireKey = (namespace: string, name: string, at: number): string =>
  `schedule:${namespace === DEFAULT_NAMESPACE ? '' : `${namespace}/`}${name}:${new Date(at).toISOString()}`;

/**
 * Recurring schedules: create, list, pause, resume, delete, and the runner that submits each fire's
 * task. Every node runs the runner; a fire's task has an idempotency key made of the schedule's name
 * and the fire time, so two nodes firing together, or a node that fired and died before recording
 * it, still submit it once.
 */
export class ScheduleService {
  readonly runner: ScheduleRunner;

  constructor(
    private readonly ctx: FleetContext,
    private readonly tasks: TaskService,
  ) {
    this.runner = new ScheduleRunner(ctx, (schedule, now) => this.fire(schedule, now));
  }

  async create(input: ScheduleInput): Promise<ScheduleView> {
    const timezone = input.timezone ?? 'UTC';
    const cron = parseCron(input.cron, timezone);
    // Refused now rather than at every fire.
    this.tasks.check(input.task);
    const now = this.ctx.now();
    const first = nextFireAfter(cron, now);
    if (first === null) throw invalid('cron', `${JSON.stringify(input.cron)} never fires again`);
    const schedule = await this.ctx.store.scheduleInsert({
      schedule: {
        namespace: input.namespace,
        name: input.name,
        cron: input.cron,
        timezone,
        task: input.task as Record<string, unknown>,
        overlap: input.overlap ?? 'skip',
        catchUp: input.catchUp ?? 'latest',
        paused: false,
        nextFireAt: first,
        createdAt: now,
      },
    });
    if (!schedule) throw new FleetError('FLEETD_ERR_SCHEDULE_EXISTS', `a schedule named ${input.name} exists already`, { name: input.name });
    this.runner.poke(first);
    return this.view(schedule);
  }

  /** A schedule of another namespace is not found, as one that does not exist. */
  async get(namespace: string, name: string): Promise<ScheduleView> {
    const schedule = await this.ctx.store.scheduleGet({ namespace, name });
    if (!schedule) throw notFound('schedule', name);
    return this.view(schedule);
  }

  async list(params: ScheduleListParams): Promise<Page<ScheduleView>> {
    const page = await this.ctx.store.scheduleList(params);
    return { items: page.items.map((s) => this.view(s)), nextCursor: page.nextCursor };
  }

  async delete(namespace: string, name: string): Promise<ScheduleView> {
    const schedule = await this.ctx.store.scheduleDelete({ namespace, name });
    if (!schedule) throw notFound('schedule', name);
    return this.view(schedule);
  }

  /** Paused, it fires no more; resumed, it fires from the next fire time after now (what it missed meanwhile is not caught up). */
  async setPaused(namespace: string, name: string, paused: boolean): Promise<ScheduleView> {
    const current = await this.ctx.store.scheduleGet({ namespace, name });
    if (!current) throw notFound('schedule', name);
    const now = this.ctx.now();
    const next = paused ? current.nextFireAt : (nextFireAfter(parseCron(current.cron, current.timezone), now) ?? current.nextFireAt);
    const schedule = await this.ctx.store.scheduleSetPaused({ namespace, name, paused, nextFireAt: next, now });
    if (!schedule) throw notFound('schedule', name);
    if (!paused) this.runner.poke(next);
    return this.view(schedule);
  }

  private view(schedule: Schedule): ScheduleView {
    const cron = parseCron(schedule.cron, schedule.timezone);
    const nextFires: number[] = [];
    if (!schedule.paused) {
      let t: number | null = schedule.nextFireAt;
      while (t !== null && nextFires.length < SHOWN_FIRES) {
        nextFires.push(t);
        t = nextFireAfter(cron, t);
      }
    }
    return { ...schedule, nextFires };
  }

  /** Submits the fires of one due schedule that its catchUp and overlap allow, then moves it on. */
  private async fire(schedule: Schedule, now: number): Promise<void> {
    const cron = parseCron(schedule.cron, schedule.timezone);
    const { fires, next } = firesDue({
      cron,
      from: schedule.nextFireAt,
      now,
      catchUp: schedule.catchUp,
      graceMs: this.ctx.config.scheduleGraceMs,
      maxCatchUp: this.ctx.config.scheduleMaxCatchUp,
    });
    let lastTaskId: number | null = null;
    let lastFireAt: number | null = null;
    let previous = schedule.lastTaskId;
    for (const at of fires) {
      if (schedule.overlap === 'skip' && previous !== null) {
        const running = await this.ctx.store.taskGet({ id: previous });
        if (running && !TERMINAL_STATUSES.has(running.status)) {
          this.ctx.log.info({ namespace: schedule.namespace, schedule: schedule.name, fireAt: new Date(at).toISOString(), running: running.id }, 'schedule fire skipped: the previous one is unfinished');
          continue;
        }
      }
      try {
        const { task } = await this.tasks.submit({
          ...(schedule.task as unknown as TaskInput),
          idempotencyKey: fireKey(schedule.namespace, schedule.name, at),
          namespace: schedule.namespace,
        });
        previous = lastTaskId = task.id;
        lastFireAt = at;
      } catch (err) {
        // A fire whose task is refused (a payload over a limit lowered since it was created) is
        // logged and passed over, so that it does not stop the schedule; an outage is retried.
        if (!(err instanceof FleetError) || err.status >= 500) throw err;
        this.ctx.log.error({ err, namespace: schedule.namespace, schedule: schedule.name, fireAt: new Date(at).toISOString() }, 'schedule fire refused');
      }
    }
    // A schedule that never fires again stays, paused at its last fire time.
    if (next === null) {
      await this.ctx.store.scheduleSetPaused({ namespace: schedule.namespace, name: schedule.name, paused: true, nextFireAt: schedule.nextFireAt, now });
      return;
    }
    await this.ctx.store.scheduleAdvance({ namespace: schedule.namespace, name: schedule.name, from: schedule.nextFireAt, nextFireAt: next, lastFireAt, lastTaskId, now });
  }
}

/** Wakes at the earliest next fire of any active schedule (and every maxSleepMs for other nodes' schedules). */
export class ScheduleRunner extends DeadlineService {
  constructor(
    private readonly ctx: FleetContext,
    private readonly fire: (schedule: Schedule, now: number) => Promise<void>,
  ) {
    super('schedule-runner', ctx.now, ctx.maintenance.maxSleepMs, ctx.onMaintenanceError);
  }

  async runOnce(now: number): Promise<{ more: boolean; next: number | null }> {
    const batch = 100;
    const due = await this.ctx.store.scheduleDue({ now, limit: batch });
    for (const schedule of due) await this.fire(schedule, now);
    return { more: due.length === batch, next: await this.ctx.store.scheduleNextFire() };
  }
}
