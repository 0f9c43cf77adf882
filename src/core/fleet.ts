import type { Bus } from '../bus/bus.js';
import { summarizeTask } from '../bus/bus.js';
import type { FleetdConfig } from '../config.js';
import { requirementKey, type AgentReleaseResult, type Store, type TaskTransition } from '../store/store.js';
import { AgentService } from './agents.js';
import { ClaimWaiters } from './claim-waiters.js';
import { steadyNow } from './clock.js';
import { CredentialService } from './credentials.js';
import type { FleetContext, Logger } from './context.js';
import { isDependencyUnavailable } from './errors.js';
import { LockService } from './locks.js';
import { AgentReaper } from './maintenance/agent-reaper.js';
import type { DeadlineService } from './maintenance/deadline-service.js';
import { LeaseRescuer } from './maintenance/lease-rescuer.js';
import { LockExpirer } from './maintenance/lock-expirer.js';
import { TaskCleaner } from './maintenance/task-cleaner.js';
import { TaskScheduler } from './maintenance/task-scheduler.js';
import { StatsService } from './stats.js';
import { TaskService } from './tasks.js';

export interface FleetOptions {
  store: Store;
  bus: Bus;
  config: Readonly<FleetdConfig>;
  log: Logger;
  /** The clock; tests may move it. Defaults to the process's steady clock (see clock.ts). */
  now?: () => number;
}

/**
 * The domain, assembled: task queue, agents, locks, stats and the maintenance services that keep
 * leases, schedules, agents and locks honest. Knows nothing of HTTP or SQL. Nothing runs until
 * `start()`.
 */
export class Fleet {
  readonly tasks: TaskService;
  readonly agents: AgentService;
  readonly locks: LockService;
  readonly credentials: CredentialService;
  readonly stats: StatsService;
  readonly waiters = new ClaimWaiters();
  readonly timers: {
    leases: LeaseRescuer;
    scheduled: TaskScheduler;
    agents: AgentReaper;
    locks: LockExpirer;
    cleaner: TaskCleaner;
  };
  private readonly ctx: FleetContext;
  private unsubscribe: (() => void)[] = [];

  constructor(readonly options: FleetOptions) {
    const { store, bus, config, log } = options;
    this.stats = new StatsService(store);
    const ctx: FleetContext = {
      store,
      bus,
      config,
      log,
      now: options.now ?? steadyNow,
      waiters: this.waiters,
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
    this.timers = {
      leases: new LeaseRescuer(ctx),
      scheduled: new TaskScheduler(ctx),
      agents: new AgentReaper(ctx),
      locks: new LockExpirer(ctx),
      cleaner: new TaskCleaner(ctx),
    };
    this.tasks = new TaskService(ctx, this.timers);
    this.agents = new AgentService(ctx, this.timers);
    this.locks = new LockService(ctx, this.timers);
    this.credentials = new CredentialService(ctx);
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
    this.unsubscribe.push(
      this.ctx.bus.subscribe('tasks.available', (e) => this.waiters.notify(e.byRequirement)),
      this.ctx.bus.subscribe('task.completed', (e) => this.stats.recordCompletion(e.task.claimedAt, e.task.completedAt)),
      this.ctx.bus.subscribe('task.failed', () => this.stats.recordFailure()),
      this.ctx.bus.subscribe('task.dead', () => this.stats.recordFailure()),
    );
    // An expired lease says its agent did not extend or complete in time: it may be frozen with its
    // connection open, and a long-poll it left waiting would take work it will never run. That
    // claim ends with no tasks (before the room it frees wakes it below); a live agent claims again.
    this.unsubscribe.push(
      this.ctx.bus.subscribe('task.requeued', (e) => {
        if (e.reason === 'lease_expired' && e.task.agentId !== null) this.tasks.endWaitsOf(e.task.agentId);
      }),
    );
    // A lease that ends frees room for its agent: a full agent's waiting claim looks again.
    for (const name of ['task.completed', 'task.failed', 'task.dead', 'task.cancelled', 'task.requeued'] as const) {
      this.unsubscribe.push(
        this.ctx.bus.subscribe(name, (e) => {
          if (e.task.agentId !== null) this.waiters.wakeAgent(e.task.agentId);
        }),
      );
    }
    this.stats.start();
    for (const timer of Object.values(this.timers) as DeadlineService[]) timer.start();
  }

  /** Stops timers and wakes every waiting claim so that it returns; the store stays open. */
  stop(): void {
    for (const timer of Object.values(this.timers) as DeadlineService[]) timer.stop();
    for (const off of this.unsubscribe) off();
    this.unsubscribe = [];
    this.stats.stop();
    this.tasks.abortWaiting();
  }

  private publishTransitions(transitions: TaskTransition[], reason: 'lease_expired' | 'agent_offline' | 'due'): void {
    const available: Record<string, number> = {};
    for (const { task } of transitions) {
      if (task.status === 'queued') {
        const key = requirementKey(task.requires);
        available[key] = (available[key] ?? 0) + 1;
      }
      if (reason === 'due') continue;
      if (task.status === 'dead') this.ctx.bus.publish('task.dead', { task: summarizeTask(task) });
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
