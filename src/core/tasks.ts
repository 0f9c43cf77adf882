import { requirementKey } from '../domain/requirements.js';
import type { TaskInsertParams, TaskInsertResult } from '../store/store.js';
import type { FleetContext } from './context.js';
import type { ReadyClaim } from './delivery.js';
import { invalid, notFound } from '../domain/errors.js';
import type { LeaseRescuer } from './maintenance/lease-rescuer.js';
import type { TaskScheduler } from './maintenance/task-scheduler.js';
import type { HeldTasks } from './maintenance/held-tasks.js';
import { planClaim } from './rules/admission.js';
import { badLockPath } from './rules/locks.js';
import type { TaskUsage } from '../domain/type-policies.js';
import { checkJsonValue } from './payload.js';
import { repeatCheck, taskRequestHash } from './rules/idempotency.js';
import { afterFailure } from './rules/retry.js';
import { CANCELLABLE, RETRYABLE, initialStatus, leaseHeld, stateAllowed } from './rules/tasks.js';
import { summarizeTask, type Page, type Task, type TaskStatus } from '../domain/types.js';

export interface TaskInput {
  type: string;
  payload?: unknown;
  /** Higher runs first. Defaults to 0. */
  priority?: number;
  /** Capabilities an agent must all have. Defaults to [type]; [] lets any agent take it. */
  requires?: string[];
  /** Submitting the same key again returns the first task instead of creating another. */
  idempotencyKey?: string;
  maxAttempts?: number;
  leaseMs?: number;
  backoffMs?: number;
  /** Epoch ms before which the task is not handed out. */
  runAt?: number;
  /** The tenant, user or repository the task is for: claims take turns across keys. */
  concurrencyKey?: string;
  /** Resources to lock for the task while it is leased: it is handed out only when all are free. */
  locks?: string[];
}

/** The task queue: submit, claim, complete, fail with retries, extend, cancel, retry. */
export class TaskService {
  constructor(
    private readonly ctx: FleetContext,
    private readonly timers: { leases: LeaseRescuer; scheduled: TaskScheduler; holds: HeldTasks },
  ) {}

  private toInsert(input: TaskInput, now: number, index?: number): TaskInsertParams {
    const at = index === undefined ? {} : { index };
    const limits = { maxBytes: this.ctx.config.maxPayloadBytes, maxDepth: this.ctx.config.maxPayloadDepth };
    checkJsonValue(input.payload ?? null, 'payload', limits, at);
    if (input.runAt !== undefined && !Number.isFinite(input.runAt)) throw invalid('runAt', 'is not a valid time', at);
    const task = {
      type: input.type,
      payload: input.payload ?? null,
      priority: input.priority ?? 0,
      requires: input.requires ?? [input.type],
      idempotencyKey: input.idempotencyKey ?? null,
      maxAttempts: input.maxAttempts ?? this.ctx.config.taskMaxAttempts,
      leaseMs: input.leaseMs ?? this.ctx.config.taskLeaseMs,
      backoffMs: input.backoffMs ?? this.ctx.config.taskBackoffMs,
      runAt: input.runAt ?? now,
      concurrencyKey: input.concurrencyKey ?? null,
      locks: [...new Set(input.locks ?? [])],
    };
    task.locks.forEach((resource, i) => {
      const bad = badLockPath(resource);
      if (bad) throw invalid('locks', `${JSON.stringify(resource)} ${bad}`, { ...at, lock: i });
    });
    return {
      ...task,
      status: initialStatus(task.runAt, now),
      requestHash: task.idempotencyKey === null ? null : taskRequestHash(task),
    };
  }

  async submit(input: TaskInput): Promise<TaskInsertResult> {
    const [result] = await this.submitMany([input], false);
    return result;
  }

  /** All or nothing: one bad item rejects the whole batch before anything is written. */
  submitBatch(inputs: TaskInput[]): Promise<TaskInsertResult[]> {
    if (inputs.length > this.ctx.config.maxTaskBatch) {
      throw invalid('tasks', `a batch holds at most ${this.ctx.config.maxTaskBatch} tasks`, { count: inputs.length });
    }
    return this.submitMany(inputs, true);
  }

  private async submitMany(inputs: TaskInput[], batch: boolean): Promise<TaskInsertResult[]> {
    const now = this.ctx.now();
    const tasks = inputs.map((input, i) => this.toInsert(input, now, batch ? i : undefined));
    const results = await this.ctx.store.taskInsertMany({ tasks, now, onRepeat: repeatCheck('task', tasks) });
    const available: Record<string, number> = {};
    let earliestRunAt = Infinity;
    for (const { task, created } of results) {
      if (!created) continue;
      this.ctx.bus.publish('task.created', { task: summarizeTask(task) });
      if (task.status === 'queued') {
        const key = requirementKey(task.requires);
        available[key] = (available[key] ?? 0) + 1;
      } else if (task.runAt < earliestRunAt) earliestRunAt = task.runAt;
    }
    if (Object.keys(available).length > 0) this.ctx.bus.publish('tasks.available', { byRequirement: available });
    if (earliestRunAt !== Infinity) this.timers.scheduled.poke(earliestRunAt);
    return results;
  }

  async get(id: number): Promise<Task> {
    const task = await this.ctx.store.taskGet({ id });
    if (!task) throw notFound('task', id);
    return task;
  }

  list(params: { status?: TaskStatus; type?: string; agentId?: string; limit: number; cursor?: string }): Promise<Page<Task>> {
    return this.ctx.store.taskList(params);
  }

  /** Every matching task, oldest first, a chunk at a time: memory stays bounded whatever the count. */
  async *export(params: { status?: TaskStatus; type?: string; agentId?: string }, chunk = 500): AsyncGenerator<Task[]> {
    let cursor: string | undefined;
    do {
      const page = await this.ctx.store.taskList({ ...params, limit: chunk, cursor, order: 'asc' });
      if (page.items.length > 0) yield page.items;
      cursor = page.nextCursor ?? undefined;
    } while (cursor !== undefined);
  }

  /**
   * One claim that never waits: leases up to `max` ready tasks the agent can do, best first, within
   * its room. When to claim and for whom (long-polls, push channels, wake-ups) is core/delivery.ts's.
   */
  async claimReady(params: { agentId: string; max: number }): Promise<ReadyClaim> {
    const now = this.ctx.now();
    const { agent, previousStatus, tasks, room, heldBack, retryAt } = await this.ctx.store.taskClaim({ ...params, now, plan: planClaim });
    if (retryAt !== null || Object.keys(heldBack).length > 0) this.timers.holds.record(heldBack, retryAt);
    if (previousStatus !== 'online') this.ctx.bus.publish('agent.online', { agent });
    let earliestExpiry = Infinity;
    for (const task of tasks) {
      this.ctx.bus.publish('task.claimed', { task: summarizeTask(task) });
      if (task.leaseExpiresAt !== null && task.leaseExpiresAt < earliestExpiry) earliestExpiry = task.leaseExpiresAt;
    }
    if (earliestExpiry !== Infinity) this.timers.leases.poke(earliestExpiry);
    return { tasks, capabilities: agent.capabilities, room };
  }

  async complete(params: { id: number; agentId: string; result?: unknown; usage?: TaskUsage }): Promise<Task> {
    checkJsonValue(params.result ?? null, 'result', {
      maxBytes: this.ctx.config.maxPayloadBytes,
      maxDepth: this.ctx.config.maxPayloadDepth,
    });
    const written = await this.ctx.store.taskComplete({ ...params, result: params.result ?? null, now: this.ctx.now() });
    const task = leaseHeld(written, params.id, params.agentId);
    await this.recordUsage(task, params.usage);
    this.ctx.bus.publish('task.completed', { task: summarizeTask(task) });
    return task;
  }

  /** What the agent reported the task used, counted for its type and key (after the write that ended its lease). */
  private async recordUsage(task: Task, usage: TaskUsage | undefined): Promise<void> {
    if (usage === undefined) return;
    await this.ctx.store.usageRecord({ type: task.type, key: task.concurrencyKey ?? '', usage, now: this.ctx.now() });
  }

  async fail(params: { id: number; agentId: string; error?: unknown; retryable?: boolean; usage?: TaskUsage }): Promise<Task> {
    checkJsonValue(params.error ?? null, 'error', {
      maxBytes: this.ctx.config.maxPayloadBytes,
      maxDepth: this.ctx.config.maxPayloadDepth,
    });
    const now = this.ctx.now();
    const failure = { error: params.error ?? null, retryable: params.retryable ?? true, now, backoffMaxMs: this.ctx.config.taskBackoffMaxMs };
    const written = await this.ctx.store.taskFail({
      id: params.id,
      agentId: params.agentId,
      now,
      endLease: (lease) => afterFailure(lease, failure),
    });
    const task = leaseHeld(written, params.id, params.agentId);
    await this.recordUsage(task, params.usage);
    const summary = summarizeTask(task);
    if (task.status === 'dead') {
      this.ctx.bus.publish('task.dead', { task: summary });
    } else {
      this.ctx.bus.publish('task.failed', { task: summary });
      if (task.status === 'queued') {
        this.ctx.bus.publish('tasks.available', { byRequirement: { [requirementKey(task.requires)]: 1 } });
      } else this.timers.scheduled.poke(task.runAt);
    }
    return task;
  }

  /**
   * The agent gives the task back for later (its provider answered 429, say): back in the queue
   * after delayMs, and the attempt its claim counted is taken back.
   */
  async release(params: { id: number; agentId: string; delayMs: number; reason?: string }): Promise<Task> {
    const now = this.ctx.now();
    const runAt = now + params.delayMs;
    const error = { code: 'FLEETD_ERR_RELEASED', message: params.reason ?? 'released by its agent for later', delayMs: params.delayMs };
    const written = await this.ctx.store.taskRelease({ id: params.id, agentId: params.agentId, now, status: initialStatus(runAt, now), runAt, error });
    const task = leaseHeld(written, params.id, params.agentId);
    this.ctx.bus.publish('task.requeued', { task: summarizeTask(task), reason: 'released' });
    if (task.status === 'queued') this.ctx.bus.publish('tasks.available', { byRequirement: { [requirementKey(task.requires)]: 1 } });
    else this.timers.scheduled.poke(task.runAt);
    return task;
  }

  async extend(params: { id: number; agentId: string; leaseMs?: number }): Promise<Task> {
    const task = leaseHeld(await this.ctx.store.taskExtendLease({ ...params, now: this.ctx.now() }), params.id, params.agentId);
    this.ctx.bus.publish('task.extended', { task: summarizeTask(task) });
    if (task.leaseExpiresAt !== null) this.timers.leases.poke(task.leaseExpiresAt);
    return task;
  }

  async cancel(id: number): Promise<Task> {
    const task = stateAllowed(await this.ctx.store.taskCancel({ id, now: this.ctx.now(), from: CANCELLABLE }), id, 'cancel');
    this.ctx.bus.publish('task.cancelled', { task: summarizeTask(task) });
    return task;
  }

  async retry(id: number): Promise<Task> {
    const task = stateAllowed(await this.ctx.store.taskRetry({ id, now: this.ctx.now(), from: RETRYABLE }), id, 'retry');
    this.ctx.bus.publish('task.retried', { task: summarizeTask(task) });
    this.ctx.bus.publish('tasks.available', { byRequirement: { [requirementKey(task.requires)]: 1 } });
    return task;
  }
}
