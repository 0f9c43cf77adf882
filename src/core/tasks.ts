import { requirementKey } from '../domain/requirements.js';
import type { TaskInsertParams, TaskInsertResult } from '../store/store.js';
import { retryDelay } from './backoff.js';
import type { WakeReason } from './claim-waiters.js';
import type { FleetContext } from './context.js';
import { invalid, notFound } from '../domain/errors.js';
import type { LeaseRescuer } from './maintenance/lease-rescuer.js';
import type { TaskScheduler } from './maintenance/task-scheduler.js';
import { checkJsonValue } from './payload.js';
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
}

export interface ClaimParams {
  agentId: string;
  max: number;
  /** Long-poll: wait up to this many ms for a task when none is ready. 0 answers at once. */
  waitMs: number;
  signal?: AbortSignal;
}

/** The task queue: submit, claim (with long-poll), complete, fail with retries, extend, cancel, retry. */
export class TaskService {
  /** How to end each waiting long-poll, by the agent it claims for. */
  private readonly pendingWaits = new Map<string, Set<() => void>>();

  constructor(
    private readonly ctx: FleetContext,
    private readonly timers: { leases: LeaseRescuer; scheduled: TaskScheduler },
  ) {}

  private toInsert(input: TaskInput, now: number, index?: number): TaskInsertParams {
    const at = index === undefined ? {} : { index };
    const limits = { maxBytes: this.ctx.config.maxPayloadBytes, maxDepth: this.ctx.config.maxPayloadDepth };
    checkJsonValue(input.payload ?? null, 'payload', limits, at);
    if (input.runAt !== undefined && !Number.isFinite(input.runAt)) throw invalid('runAt', 'is not a valid time', at);
    return {
      type: input.type,
      payload: input.payload ?? null,
      priority: input.priority ?? 0,
      requires: input.requires ?? [input.type],
      idempotencyKey: input.idempotencyKey ?? null,
      maxAttempts: input.maxAttempts ?? this.ctx.config.taskMaxAttempts,
      leaseMs: input.leaseMs ?? this.ctx.config.taskLeaseMs,
      backoffMs: input.backoffMs ?? this.ctx.config.taskBackoffMs,
      runAt: input.runAt ?? now,
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
    const results = await this.ctx.store.taskInsertMany({ tasks, now });
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
   * Leases up to `max` tasks the agent can do. With `waitMs`, waits for work to appear and is woken
   * the moment a matching task is submitted or returns to the queue: no sleep-and-requery.
   */
  async claim(params: ClaimParams): Promise<Task[]> {
    const deadline = this.ctx.now() + params.waitMs;
    let reason: WakeReason | undefined;
    for (;;) {
      const generation = this.ctx.waiters.generation;
      const { tasks, capabilities, room } = await this.claimNow(params.agentId, params.max);
      if (reason) this.handOn(reason, tasks);
      if (tasks.length > 0 || params.waitMs <= 0) return tasks;
      // Tasks announced while our claim was in flight may be ones it missed: look again at once.
      if (this.ctx.waiters.generation !== generation) continue;
      const remaining = deadline - this.ctx.now();
      if (remaining <= 0 || params.signal?.aborted) return [];
      const wake = await this.waitForWork({
        agentId: params.agentId,
        capabilities: new Set(capabilities),
        // A full agent sleeps through new tasks; the end of one of its own leases wakes it.
        want: room > 0 ? params.max : 0,
        timeoutMs: remaining,
        signal: params.signal,
      });
      if (!wake.woken) return [];
      reason = wake.reason;
    }
  }

  /** Leases up to `max` ready tasks at once, never waiting: how the WebSocket gateway pushes work to a socket with credit. */
  async claimReady(agentId: string, max: number, reason?: WakeReason): Promise<{ tasks: Task[]; room: number }> {
    const { tasks, room } = await this.claimNow(agentId, max);
    if (reason) this.handOn(reason, tasks);
    return { tasks, room };
  }

  /**
   * A waiter woken for `reason.count` tasks of one requirement may have claimed others instead (a
   * higher priority elsewhere): the tasks it was counted for are still queued with nobody awake
   * for them, so wake someone else. One that claimed nothing found that requirement empty.
   */
  private handOn(reason: WakeReason, claimed: Task[]): void {
    if (claimed.length === 0) return;
    const taken = claimed.filter((t) => requirementKey(t.requires) === reason.key).length;
    if (taken < reason.count) this.ctx.waiters.notify({ [reason.key]: reason.count - taken });
  }

  private async claimNow(agentId: string, max: number): Promise<{ tasks: Task[]; capabilities: string[]; room: number }> {
    const now = this.ctx.now();
    const { agent, previousStatus, tasks, room } = await this.ctx.store.taskClaim({ agentId, max, now });
    if (previousStatus !== 'online') this.ctx.bus.publish('agent.online', { agent });
    let earliestExpiry = Infinity;
    for (const task of tasks) {
      this.ctx.bus.publish('task.claimed', { task: summarizeTask(task) });
      if (task.leaseExpiresAt !== null && task.leaseExpiresAt < earliestExpiry) earliestExpiry = task.leaseExpiresAt;
    }
    if (earliestExpiry !== Infinity) this.timers.leases.poke(earliestExpiry);
    return { tasks, capabilities: agent.capabilities, room };
  }

  private waitForWork(w: {
    agentId: string;
    capabilities: Set<string>;
    want: number;
    timeoutMs: number;
    signal?: AbortSignal;
  }): Promise<{ woken: boolean; reason?: WakeReason }> {
    return new Promise((resolve) => {
      let done = false;
      const finish = (woken: boolean, reason?: WakeReason) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        remove();
        w.signal?.removeEventListener('abort', onAbort);
        const ofAgent = this.pendingWaits.get(w.agentId);
        ofAgent?.delete(onAbort);
        if (ofAgent?.size === 0) this.pendingWaits.delete(w.agentId);
        resolve({ woken, reason });
      };
      const onAbort = () => finish(false);
      const timer = setTimeout(onAbort, w.timeoutMs);
      const remove = this.ctx.waiters.add({
        agentId: w.agentId,
        capabilities: w.capabilities,
        want: () => (done ? 0 : w.want),
        wake: (reason) => finish(true, reason),
      });
      w.signal?.addEventListener('abort', onAbort, { once: true });
      let ofAgent = this.pendingWaits.get(w.agentId);
      if (!ofAgent) this.pendingWaits.set(w.agentId, (ofAgent = new Set()));
      ofAgent.add(onAbort);
    });
  }

  /** Ends every waiting long-poll now (they answer with no tasks); used on shutdown. */
  abortWaiting(): void {
    for (const ofAgent of [...this.pendingWaits.values()]) for (const abort of [...ofAgent]) abort();
  }

  /** Ends the agent's waiting long-polls now, with no tasks. */
  endWaitsOf(agentId: string): void {
    for (const abort of [...(this.pendingWaits.get(agentId) ?? [])]) abort();
  }

  async complete(params: { id: number; agentId: string; result?: unknown }): Promise<Task> {
    checkJsonValue(params.result ?? null, 'result', {
      maxBytes: this.ctx.config.maxPayloadBytes,
      maxDepth: this.ctx.config.maxPayloadDepth,
    });
    const task = await this.ctx.store.taskComplete({ ...params, result: params.result ?? null, now: this.ctx.now() });
    this.ctx.bus.publish('task.completed', { task: summarizeTask(task) });
    return task;
  }

  async fail(params: { id: number; agentId: string; error?: unknown; retryable?: boolean }): Promise<Task> {
    checkJsonValue(params.error ?? null, 'error', {
      maxBytes: this.ctx.config.maxPayloadBytes,
      maxDepth: this.ctx.config.maxPayloadDepth,
    });
    const { taskBackoffMaxMs } = this.ctx.config;
    const task = await this.ctx.store.taskFail({
      id: params.id,
      agentId: params.agentId,
      error: params.error ?? null,
      retryable: params.retryable ?? true,
      now: this.ctx.now(),
      retryDelay: (attempt, backoffMs) => retryDelay(attempt, backoffMs, taskBackoffMaxMs),
    });
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

  async extend(params: { id: number; agentId: string; leaseMs?: number }): Promise<Task> {
    const task = await this.ctx.store.taskExtendLease({ ...params, now: this.ctx.now() });
    this.ctx.bus.publish('task.extended', { task: summarizeTask(task) });
    if (task.leaseExpiresAt !== null) this.timers.leases.poke(task.leaseExpiresAt);
    return task;
  }

  async cancel(id: number): Promise<Task> {
    const task = await this.ctx.store.taskCancel({ id, now: this.ctx.now() });
    this.ctx.bus.publish('task.cancelled', { task: summarizeTask(task) });
    return task;
  }

  async retry(id: number): Promise<Task> {
    const task = await this.ctx.store.taskRetry({ id, now: this.ctx.now() });
    this.ctx.bus.publish('task.retried', { task: summarizeTask(task) });
    this.ctx.bus.publish('tasks.available', { byRequirement: { [requirementKey(task.requires)]: 1 } });
    return task;
  }
}
