import { type Bus, subscribeOwn } from '../bus/bus.js';
import type { FleetdConfig } from '../config.js';
import { TASK_LOCK_TTL_MS, taskLockId, type AgentReleaseResult, type Store, type TaskTransition } from '../store/store.js';
import { taskRequirementKey } from '../domain/requirements.js';
import { summarizeTask, type Lock, type TaskSummary } from '../domain/types.js';
import { AgentService } from './agents.js';
import { ClaimWaiters } from './claim-waiters.js';
import { steadyNow } from './clock.js';
import { CredentialService } from './credentials.js';
import { AuditLog } from './audit.js';
import { AuditCleaner } from './maintenance/audit-cleaner.js';
import type { FleetContext, Logger } from './context.js';
import { TaskDelivery } from './delivery.js';
import { isDependencyUnavailable } from '../domain/errors.js';
import { LockService } from './locks.js';
import { NamespaceService } from './namespaces.js';
import { AgentPresence } from './presence.js';
import { AgentReaper } from './maintenance/agent-reaper.js';
import type { DeadlineService } from './maintenance/deadline-service.js';
import { LeaseRescuer } from './maintenance/lease-rescuer.js';
import { LockExpirer } from './maintenance/lock-expirer.js';
import { TaskCleaner } from './maintenance/task-cleaner.js';
import { TaskScheduler } from './maintenance/task-scheduler.js';
import { TaskExpirer } from './maintenance/task-expirer.js';
import { TaskEndWaiters } from './task-end-waiters.js';
import { HeldTasks } from './maintenance/held-tasks.js';
import { TaskTypeService } from './task-types.js';
import { StatsService } from './stats.js';
import { ScheduleService } from './schedules.js';
import { TaskService } from './tasks.js';
import { ActivityService } from './activity.js';

/** The lock a leased task holds on its resources (see store.taskLockId), as lock events carry it; undefined for a task without locks. */
function taskLock(task: TaskSummary): Lock | undefined {
  if (task.locks.length === 0 || task.claimedAt === null || task.agentId === null) return undefined;
  return {
    id: taskLockId(task.id),
    namespace: task.namespace,
    agentId: task.agentId,
    resources: task.locks,
    description: `task ${task.id}`,
    createdAt: task.claimedAt,
    expiresAt: task.claimedAt + TASK_LOCK_TTL_MS,
  };
}

export interface FleetOptions {
  store: Store;
  bus: Bus;
  config: Readonly<FleetdConfig>;
  log: Logger;
  /** The clock; tests may move it. Defaults to the process's steady clock (see clock.ts). */
  now?: () => number;
}

/**
 * The domain, assembled: task queue, delivery, agents, locks, stats and the maintenance services
 * that keep leases, schedules, agents and locks honest. Knows nothing of HTTP or SQL. Nothing runs
 * until `start()`.
 */
export class Fleet {
  readonly tasks: TaskService;
  /** Long-polls and push channels: who is woken, and claims, when tasks appear or leases end. */
  readonly delivery: TaskDelivery;
  readonly agents: AgentService;
  readonly locks: LockService;
  readonly credentials: CredentialService;
  /** The namespaces known, and their quotas. */
  readonly namespaces: NamespaceService;
  readonly schedules: ScheduleService;
  /** Administrative and destructive acts: who, when, what, from where. */
  readonly audit: AuditLog;
  readonly stats: StatsService;
  /** Progress, log lines and output that agents report on the tasks they hold. */
  readonly activity: ActivityService;
  /** Task types: policies, pauses, what is held back. */
  readonly types: TaskTypeService;
  readonly waiters = new ClaimWaiters();
  /** Heartbeats of online agents, kept in memory and written together (presence.ts). */
  readonly presence: AgentPresence;
  /** Requests waiting for a task to end (`GET /v1/tasks/:id?waitMs=`). */
  readonly taskEnds = new TaskEndWaiters();
  readonly timers: {
    leases: LeaseRescuer;
    scheduled: TaskScheduler;
    agents: AgentReaper;
    locks: LockExpirer;
    cleaner: TaskCleaner;
    expirer: TaskExpirer;
    auditCleaner: AuditCleaner;
    holds: HeldTasks;
  };
  private readonly ctx: FleetContext;
  private unsubscribe: (() => void)[] = [];

  constructor(readonly options: FleetOptions) {
    const { store, bus, config, log } = options;
    this.stats = new StatsService(store, options.now ?? steadyNow);
    const ctx: FleetContext = {
      store,
      bus,
      config,
      log,
      now: options.now ?? steadyNow,
      stats: this.stats,
      maintenance: { batchSize: 1_000, maxSleepMs: 5_000 },
      // A dependency's outage is logged once by its connection; maintenance simply tries again.
      onMaintenanceError: (err, service) => {
        if (!isDependencyUnavailable(err)) log.error({ err, service }, 'maintenance run failed');
      },
      publishTransitions: (transitions, reason) => this.publishTransitions(transitions, reason),
      publishRelease: (released, event) => this.publishRelease(released, event),
    };
    this.ctx = ctx;
    this.presence = new AgentPresence(ctx);
    this.timers = {
      leases: new LeaseRescuer(ctx),
      scheduled: new TaskScheduler(ctx),
      agents: new AgentReaper(ctx, this.presence),
      locks: new LockExpirer(ctx),
      cleaner: new TaskCleaner(ctx),
      expirer: new TaskExpirer(ctx),
      auditCleaner: new AuditCleaner(ctx),
      holds: new HeldTasks(ctx),
    };
    this.activity = new ActivityService(ctx);
    this.tasks = new TaskService(ctx, this.timers, this.taskEnds);
    this.delivery = new TaskDelivery({
      waiters: this.waiters,
      bus,
      claimReady: (params) => this.tasks.claimReady(params),
      leasedByClaims: (agentId, claimIds, except) => this.tasks.leasedByClaims(agentId, claimIds, except),
      leasedTo: (agentId) => this.tasks.leasedTo(agentId),
      claimOnCredit: store.writesInStartOrder,
      now: ctx.now,
      log,
    });
    this.agents = new AgentService(ctx, this.timers, this.presence);
    this.locks = new LockService(ctx, this.timers);
    this.credentials = new CredentialService(ctx);
    this.namespaces = new NamespaceService(ctx);
    this.schedules = new ScheduleService(ctx, this.tasks);
    this.audit = new AuditLog(ctx);
    this.types = new TaskTypeService(ctx, this.timers.holds);
  }

  get bus(): Bus {
    return this.ctx.bus;
  }

  get store(): Store {
    return this.ctx.store;
  }

  /** Epoch ms on the fleet's clock, which stored times are compared with. */
  now(): number {
    return this.ctx.now();
  }

  start(): void {
    this.delivery.start();
    this.locks.start();
    this.unsubscribe.push(
      this.ctx.bus.subscribe('task.completed', (e) => this.stats.recordCompletion(e.task.claimedAt, e.task.completedAt)),
      this.ctx.bus.subscribe('task.failed', () => this.stats.recordFailure()),
      this.ctx.bus.subscribe('task.dead', () => this.stats.recordFailure()),
      this.ctx.bus.subscribe('task.completed', (e) => this.taskEnds.ended(e.task.id)),
      this.ctx.bus.subscribe('task.dead', (e) => this.taskEnds.ended(e.task.id)),
      this.ctx.bus.subscribe('task.cancelled', (e) => this.taskEnds.ended(e.task.id)),
      // A task's locks are taken with its lease and go with it (in the store); say so, as for any
      // lock. The node that leased or ended the task says it, and its bus relays that: said again
      // for another node's event, every observer would hear it twice.
      subscribeOwn(this.ctx.bus, 'task.claimed', (e) => {
        const lock = taskLock(e.task);
        if (lock) this.ctx.bus.publish('lock.acquired', { lock });
      }),
      ...(['task.completed', 'task.failed', 'task.dead', 'task.cancelled', 'task.requeued'] as const).map((name) =>
        subscribeOwn(this.ctx.bus, name, (e) => {
          const lock = taskLock(e.task);
          if (lock) this.ctx.bus.publish('lock.released', { lock, reason: 'released' });
        }),
      ),
    );
    this.stats.start();
    this.presence.start();
    for (const timer of Object.values(this.timers) as DeadlineService[]) timer.start();
    this.schedules.runner.start();
  }

  /** Stops timers, ends every waiting claim so that it answers, and closes every push channel; the store stays open. */
  stop(): void {
    for (const timer of Object.values(this.timers) as DeadlineService[]) timer.stop();
    this.schedules.runner.stop();
    for (const off of this.unsubscribe) off();
    this.unsubscribe = [];
    this.stats.stop();
    this.presence.stop();
    this.delivery.stop();
    this.taskEnds.endAll();
    this.locks.stop();
  }

  /** Writes what memory holds of the agents' heartbeats; on shutdown, once nothing beats any more. */
  flush(): Promise<void> {
    return this.presence.flush();
  }

  private publishTransitions(all: TaskTransition[], reason: 'lease_expired' | 'agent_offline' | 'due'): void {
    // Tasks that were waiting on those that went dead, released or cancelled in the same write.
    const released = all.filter((t) => t.from === 'waiting');
    const transitions = released.length > 0 ? all.filter((t) => t.from !== 'waiting') : all;
    if (released.length > 0) this.tasks.publishReleased(released);
    const available: Record<string, number> = {};
    for (const { task } of transitions) {
      if (task.status === 'queued') {
        const key = taskRequirementKey(task);
        available[key] = (available[key] ?? 0) + 1;
      }
      if (reason === 'due') continue;
      if (task.status === 'scheduled') this.timers.scheduled.poke(task.runAt);
      if (task.status === 'dead') this.ctx.bus.publish('task.dead', { task: summarizeTask(task) });
      // An attempt that ran past its execution timeout failed (and backs off), as a reported failure would.
      else if ((task.error as { code?: unknown } | null)?.code === 'FLEETD_ERR_TIMEOUT') this.ctx.bus.publish('task.failed', { task: summarizeTask(task) });
      else this.ctx.bus.publish('task.requeued', { task: summarizeTask(task), reason });
    }
    if (Object.keys(available).length > 0) this.ctx.bus.publish('tasks.available', { byRequirement: available });
  }

  private publishRelease(released: AgentReleaseResult, event: 'agent.offline' | 'agent.deleted'): void {
    this.publishTransitions(released.tasks, 'agent_offline');
    for (const lock of released.locks) this.ctx.bus.publish('lock.released', { lock, reason: 'agent_offline' });
    this.ctx.bus.publish(event, { agent: released.agent });
  }
}
