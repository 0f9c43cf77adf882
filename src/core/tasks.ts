import { claimKeysOf, namespaceRequirement, pinnedTo, taskRequirementKey } from '../domain/requirements.js';
import { DEFAULT_NAMESPACE, NAMESPACE_PATTERN, isNamespaceName, namespaceVisible, type NamespaceFilter } from '../domain/namespaces.js';
import { IDEMPOTENCY_KEY_SEPARATOR, type TaskBulkFilter, type TaskInsertParams, type TaskInsertResult, type TaskTransition, type TaskWrite } from '../store/store.js';
import type { FleetContext } from './context.js';
import { leaseKey, type ReadyClaim } from './delivery.js';
import { FleetError, invalid, notFound } from '../domain/errors.js';
import type { LeaseRescuer } from './maintenance/lease-rescuer.js';
import type { TaskScheduler } from './maintenance/task-scheduler.js';
import type { TaskExpirer } from './maintenance/task-expirer.js';
import type { TaskEndWaiters } from './task-end-waiters.js';
import type { HangUp } from './hang-up.js';
import { cancelledError, expiryOf } from './rules/control.js';
import { bulkFilter, bulkFrom, type BulkAction } from './rules/bulk.js';
import type { HeldTasks } from './maintenance/held-tasks.js';
import { planClaim } from './rules/admission.js';
import { badLockPath } from './rules/locks.js';
import type { TaskUsage } from '../domain/type-policies.js';
import { checkJsonValue, checkedJson } from './payload.js';
import { repeatCheck, taskRequestHash } from './rules/idempotency.js';
import { afterFailure } from './rules/retry.js';
import { CANCELLABLE, RETRYABLE, initialStatus, leaseHeld, stateAllowed } from './rules/tasks.js';
import { checkDependsOn, linkCheck } from './rules/dependencies.js';
import { TERMINAL_STATUSES, summarizeTask, type Agent, type TaskWithoutPayload, type OnDependencyFailure, type Page, type Task, type TaskStatus } from '../domain/types.js';

export interface TaskInput {
  /** The namespace it is submitted to: default when absent. Its parent and dependencies must be of it too. */
  namespace?: string;
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
  /** The longest one attempt may run from its claim, extensions included. Defaults to the server's (config). */
  executionTimeoutMs?: number;
  /** Dead with FLEETD_ERR_EXPIRED, never handed out, when not claimed within this long of runAt. */
  scheduleTimeoutMs?: number;
  /** Pins the task to this agent: it requires `agent:<id>`, which only that agent has. */
  agentId?: string;
  /** Labels to find it by (GET /v1/tasks?tag=, bulk actions). */
  tags?: string[];
  /** The submitter's own data about the task, up to METADATA_MAX_BYTES of JSON. */
  metadata?: Record<string, unknown>;
  /** The task that spawned this one; it must exist. */
  parentId?: number;
  /** Tasks that must finish first (at most 1,000, each existing): the task waits until they have. */
  dependsOn?: number[];
  /** When a dependency ends dead or cancelled: cancel this task (the default), or run it anyway. */
  onDependencyFailure?: OnDependencyFailure;
  /** The tenant, user or repository the task is for: claims take turns across keys. */
  concurrencyKey?: string;
  /** Resources to lock for the task while it is leased: it is handed out only when all are free. */
  locks?: string[];
}

/** Metadata is for describing a task, not for carrying its data (that is the payload's). */
export const METADATA_MAX_BYTES = 16_384;

/** The task queue: submit, claim, complete, fail with retries, extend, cancel, retry. */
export class TaskService {
  constructor(
    private readonly ctx: FleetContext,
    private readonly timers: { leases: LeaseRescuer; scheduled: TaskScheduler; expirer: TaskExpirer; holds: HeldTasks },
    private readonly ends: TaskEndWaiters,
  ) {}

  private toInsert(input: TaskInput, now: number, index?: number): TaskInsertParams {
    const at = index === undefined ? {} : { index };
    const limits = { maxBytes: this.ctx.config.maxPayloadBytes, maxDepth: this.ctx.config.maxPayloadDepth };
    const { text: payloadJson } = checkedJson(input.payload ?? null, 'payload', limits, at);
    if (input.runAt !== undefined && !Number.isFinite(input.runAt)) throw invalid('runAt', 'is not a valid time', at);
    checkJsonValue(input.metadata ?? {}, 'metadata', { maxBytes: METADATA_MAX_BYTES, maxDepth: this.ctx.config.maxPayloadDepth }, at);
    const namespace = input.namespace ?? DEFAULT_NAMESPACE;
    if (input.namespace !== undefined && !isNamespaceName(namespace)) throw invalid('namespace', `must match ${NAMESPACE_PATTERN}`, at);
    if (input.idempotencyKey?.includes(IDEMPOTENCY_KEY_SEPARATOR)) throw invalid('idempotencyKey', 'must not contain U+001F', at);
    for (const r of input.requires ?? []) {
      if (r.startsWith('agent:')) throw invalid('requires', `${r}: pin a task to an agent with agentId`, at);
      if (r.startsWith(namespaceRequirement(''))) throw invalid('requires', `${r}: a task's namespace is its namespace field`, at);
      if (r.startsWith('label:') && !r.includes('=')) throw invalid('requires', `${r}: a label requirement is label:<key>=<value>`, at);
    }
    const task = {
      namespace,
      type: input.type,
      payload: input.payload ?? null,
      priority: input.priority ?? 0,
      requires: [...(input.requires ?? [input.type]), ...(input.agentId === undefined ? [] : [pinnedTo(input.agentId)])],
      idempotencyKey: input.idempotencyKey ?? null,
      maxAttempts: input.maxAttempts ?? this.ctx.config.taskMaxAttempts,
      leaseMs: input.leaseMs ?? this.ctx.config.taskLeaseMs,
      backoffMs: input.backoffMs ?? this.ctx.config.taskBackoffMs,
      runAt: input.runAt ?? now,
      concurrencyKey: input.concurrencyKey ?? null,
      locks: [...new Set(input.locks ?? [])],
    };
    const executionTimeoutMs = input.executionTimeoutMs ?? (this.ctx.config.taskExecutionTimeoutMs || null);
    const scheduleTimeoutMs = input.scheduleTimeoutMs ?? null;
    const dependsOn = checkDependsOn(input.dependsOn, at);
    const links =
      input.parentId !== undefined || dependsOn.length > 0 || input.onDependencyFailure !== undefined
        ? { parentId: input.parentId ?? null, dependsOn, onDependencyFailure: input.onDependencyFailure ?? 'cancel' }
        : undefined;
    // Links are part of what a key is bound to, only when there are any: older keys keep their hash.
    // The namespace is not: a key is looked up within its namespace only.
    const hashedJson = links ? `[${payloadJson},${JSON.stringify(links)}]` : payloadJson;
    task.locks.forEach((resource, i) => {
      const bad = badLockPath(resource);
      if (bad) throw invalid('locks', `${JSON.stringify(resource)} ${bad}`, { ...at, lock: i });
    });
    // Field by field: spread into a literal with more fields after it and a conditional spread,
    // the object cost about 11 µs a task to build, one literal 0.1 (V8 builds those on a slow path).
    const params: TaskInsertParams = {
      namespace: task.namespace,
      type: task.type,
      status: initialStatus(task.runAt, now),
      payload: task.payload,
      payloadJson,
      priority: task.priority,
      requires: task.requires,
      idempotencyKey: task.idempotencyKey,
      requestHash: task.idempotencyKey === null ? null : taskRequestHash(task, hashedJson),
      maxAttempts: task.maxAttempts,
      leaseMs: task.leaseMs,
      backoffMs: task.backoffMs,
      runAt: task.runAt,
      executionTimeoutMs,
      scheduleTimeoutMs,
      expiresAt: expiryOf(task.runAt, scheduleTimeoutMs),
      tags: [...new Set(input.tags ?? [])],
      metadata: input.metadata ?? {},
      concurrencyKey: task.concurrencyKey,
      locks: task.locks,
    };
    if (links) params.links = links;
    return params;
  }

  /** Checks a task as submit would (payload limits, times, dependencies' count), writing nothing: for tasks submitted later, by a schedule. */
  check(input: TaskInput): void {
    this.toInsert(input, this.ctx.now());
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
    // A task pinned to an agent that does not exist, or of another namespace, would wait for nobody.
    const pinned = new Map<string, Agent | undefined>();
    for (const [i, { agentId }] of inputs.entries()) {
      if (agentId === undefined) continue;
      if (!pinned.has(agentId)) pinned.set(agentId, await this.ctx.store.agentGet({ id: agentId }));
      if (pinned.get(agentId)?.namespace !== tasks[i].namespace) throw notFound('agent', agentId);
    }
    const linked = tasks.some((t) => t.links);
    const results = await this.ctx.store.taskInsertMany({
      tasks,
      now,
      onRepeat: repeatCheck('task', tasks),
      ...(linked ? { onLinks: linkCheck(tasks, now) } : {}),
    });
    const available: Record<string, number> = {};
    let earliestRunAt = Infinity;
    let earliestExpiry = Infinity;
    for (const { task, created } of results) {
      if (!created) continue;
      const expiresAt = expiryOf(task.runAt, task.scheduleTimeoutMs);
      if (expiresAt !== null && expiresAt < earliestExpiry) earliestExpiry = expiresAt;
      this.ctx.bus.publish('task.created', { task: summarizeTask(task) });
      if (task.status === 'queued') {
        const key = taskRequirementKey(task);
        available[key] = (available[key] ?? 0) + 1;
      } else if (task.status === 'scheduled' && task.runAt < earliestRunAt) earliestRunAt = task.runAt;
    }
    if (Object.keys(available).length > 0) this.ctx.bus.publish('tasks.available', { byRequirement: available });
    if (earliestRunAt !== Infinity) this.timers.scheduled.poke(earliestRunAt);
    if (earliestExpiry !== Infinity) this.timers.expirer.poke(earliestExpiry);
    return results;
  }

  /** The task, if it is of one of `namespaces` (all when undefined): one of another namespace is as missing (404). */
  async get(id: number, namespaces?: NamespaceFilter): Promise<Task> {
    const task = await this.visible(id, namespaces);
    return (await this.withDependencies([task]))[0];
  }

  private async visible(id: number, namespaces: NamespaceFilter): Promise<Task> {
    const task = await this.ctx.store.taskGet({ id });
    if (!task || !namespaceVisible(namespaces, task.namespace)) throw notFound('task', id);
    return task;
  }

  /** The tasks submitted with this one as their parent, oldest first; 404 when the task does not exist (in `namespaces`). */
  async children(params: { id: number; limit: number; cursor?: string; namespaces?: NamespaceFilter }): Promise<Page<Task>> {
    const [page, parent] = await Promise.all([
      this.ctx.store.taskList({ parentId: params.id, limit: params.limit, cursor: params.cursor, order: 'asc', namespaces: params.namespaces }),
      params.cursor === undefined ? this.ctx.store.taskGet({ id: params.id }) : undefined,
    ]);
    if (params.cursor === undefined && (!parent || !namespaceVisible(params.namespaces, parent.namespace))) throw notFound('task', params.id);
    return page;
  }

  /** The tasks with their dependencies' outcomes, for those that have dependencies (one read for all). */
  async withDependencies(tasks: Task[]): Promise<Task[]> {
    const ids = tasks.filter((t) => t.dependencyCount > 0).map((t) => t.id);
    if (ids.length === 0) return tasks;
    const byTask = await this.ctx.store.taskDependencies({ ids });
    return tasks.map((t) => (byTask.has(t.id) ? { ...t, dependencies: byTask.get(t.id) } : t));
  }

  /**
   * Waiting tasks a write finished waiting (in its own transaction): those released are announced
   * like new ones, those cancelled because a dependency failed like any cancellation.
   */
  publishReleased(released: TaskTransition[]): void {
    const available: Record<string, number> = {};
    let earliestRunAt = Infinity;
    for (const { task } of released) {
      const summary = summarizeTask(task);
      if (task.status === 'cancelled') {
        this.ctx.bus.publish('task.cancelled', { task: summary });
        continue;
      }
      this.ctx.bus.publish('task.released', { task: summary });
      if (task.status === 'queued') {
        const key = taskRequirementKey(task);
        available[key] = (available[key] ?? 0) + 1;
      } else if (task.runAt < earliestRunAt) earliestRunAt = task.runAt;
    }
    if (Object.keys(available).length > 0) this.ctx.bus.publish('tasks.available', { byRequirement: available });
    if (earliestRunAt !== Infinity) this.timers.scheduled.poke(earliestRunAt);
  }

  private released(write: TaskWrite<TaskWithoutPayload>): void {
    if (write.released) this.publishReleased(write.released);
  }

  /**
   * The task once it has ended (completed, dead, cancelled), or as it is when `waitMs` passes or
   * `signal` aborts (the client hung up): one request instead of a subscription and a read.
   */
  async waitForEnd(id: number, waitMs: number, signal?: HangUp, namespaces?: NamespaceFilter): Promise<Task> {
    const watch = this.ends.watch(id);
    try {
      const task = await this.get(id, namespaces);
      if (TERMINAL_STATUSES.has(task.status) || waitMs <= 0) return task;
      await watch.until(waitMs, signal);
      return await this.get(id, namespaces);
    } finally {
      watch.cancel();
    }
  }

  list(params: { namespaces?: NamespaceFilter; status?: TaskStatus; type?: string; agentId?: string; tag?: string; limit: number; cursor?: string }): Promise<Page<Task>> {
    return this.ctx.store.taskList(params);
  }

  /** Every matching task, oldest first, a chunk at a time: memory stays bounded whatever the count. */
  async *export(params: { namespaces?: NamespaceFilter; status?: TaskStatus; type?: string; agentId?: string }, chunk = 500): AsyncGenerator<Task[]> {
    let cursor: string | undefined;
    do {
      const page = await this.ctx.store.taskList({ ...params, limit: chunk, cursor, order: 'asc' });
      if (page.items.length > 0) yield page.items;
      cursor = page.nextCursor ?? undefined;
    } while (cursor !== undefined);
  }

  /**
   * Every task leased to the agent now, with its dependencies' outcomes as a claim hands them out:
   * what an agent takes back when it cannot know what it holds (a new socket's welcome, a claim
   * whose answer was lost).
   */
  async leasedTo(agentId: string): Promise<Task[]> {
    const leased: Task[] = [];
    for await (const chunk of this.export({ agentId, status: 'leased' })) leased.push(...chunk);
    return this.withDependencies(leased);
  }

  /**
   * One claim that never waits: leases up to `max` ready tasks the agent can do, best first, within
   * its room. When to claim and for whom (long-polls, push channels, wake-ups) is core/delivery.ts's.
   */
  async claimReady(params: { agentId: string; max: number; claimId?: number }): Promise<ReadyClaim> {
    const now = this.ctx.now();
    const { agent, previousStatus, tasks, room, heldBack, retryAt } = await this.ctx.store.taskClaim({ ...params, now, plan: planClaim });
    if (retryAt !== null || Object.keys(heldBack).length > 0) this.timers.holds.record(heldBack, retryAt);
    if (previousStatus !== 'online') this.ctx.bus.publish('agent.online', { agent });
    this.announceClaimed(tasks);
    let leased: Task[];
    try {
      leased = await this.withDependencies(tasks);
    } catch (err) {
      // Leased and committed, yet unanswered: the agent is to find them as a lost claim's (core/delivery.ts).
      throw err instanceof FleetError && err.status === 503 ? new FleetError(err.code, err.message, { ...err.details, outcomeUnknown: true }) : err;
    }
    return { tasks: leased, capabilities: claimKeysOf(agent), namespace: agent.namespace, room };
  }

  /**
   * The tasks still leased to the agent by these claims (their `claimId`s), but the leases in
   * `except` (leaseKey), read back and announced as claimReady announces what it leases.
   * For claims whose answer was lost with their connection, which the store may have committed all
   * the same (see core/delivery.ts).
   */
  async leasedByClaims(agentId: string, claimIds: readonly number[], except: ReadonlySet<string>): Promise<Task[]> {
    const tasks = (await this.ctx.store.taskLeasedByClaims({ agentId, claimIds })).filter((t) => !except.has(leaseKey(t)));
    this.announceClaimed(tasks);
    return this.withDependencies(tasks);
  }

  private announceClaimed(tasks: Task[]): void {
    let earliestExpiry = Infinity;
    for (const task of tasks) {
      this.ctx.bus.publish('task.claimed', { task: summarizeTask(task) });
      if (task.leaseExpiresAt !== null && task.leaseExpiresAt < earliestExpiry) earliestExpiry = task.leaseExpiresAt;
    }
    if (earliestExpiry !== Infinity) this.timers.leases.poke(earliestExpiry);
  }

  /** The task completed, without its payload (TaskWithoutPayload): nothing that completes a task needs it again. */
  async complete(params: { id: number; agentId: string; result?: unknown; usage?: TaskUsage }): Promise<TaskWithoutPayload> {
    const result = params.result ?? null;
    const { text, bytes } = checkedJson(result, 'result', { maxBytes: this.ctx.config.maxPayloadBytes, maxDepth: this.ctx.config.maxPayloadDepth });
    const written = await this.ctx.store.taskComplete({ id: params.id, agentId: params.agentId, result, resultJson: text, now: this.ctx.now() });
    const task = await this.leaseHeld(written, params.id, params.agentId);
    await this.recordUsage(task, params.usage);
    // The result travels with the event, so that whoever waits needs no read; a large one does not.
    const carried = bytes <= this.ctx.config.eventResultMaxBytes ? { result: task.result } : { resultTruncated: true };
    this.ctx.bus.publish('task.completed', { task: summarizeTask(task), ...carried });
    this.released(written);
    return task;
  }

  /**
   * A completion, a failure, an extension or a release of task `id` (`write`), answered with the
   * task whole, for the answers that show its payload (their single routes without
   * ?return=minimal). The payload is read before the write, as a payload never changes: a read
   * after it could find the task deleted by then, or its id taken by another task, and answer a
   * failure for a write that was made. Each write succeeds only for the agent holding the lease, so
   * the task read is the task written.
   */
  async whole(id: number, write: () => Promise<TaskWithoutPayload>): Promise<Task> {
    const stored = await this.ctx.store.taskGet({ id });
    const written = await write();
    if (!stored) throw new Error(`task ${id} was written, and was not there just before`);
    return { ...written, payloadJson: stored.payloadJson };
  }

  /** What the agent reported the task used, counted for its type and key (after the write that ended its lease). */
  private async recordUsage(task: TaskWithoutPayload, usage: TaskUsage | undefined): Promise<void> {
    if (usage === undefined) return;
    await this.ctx.store.usageRecord({ namespace: task.namespace, type: task.type, key: task.concurrencyKey ?? '', usage, now: this.ctx.now() });
    this.ctx.stats.usageRecorded();
  }

  /** The task failed, without its payload (TaskWithoutPayload), which its failure does not read. */
  async fail(params: { id: number; agentId: string; error?: unknown; retryable?: boolean; usage?: TaskUsage }): Promise<TaskWithoutPayload> {
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
    const task = await this.leaseHeld(written, params.id, params.agentId);
    await this.recordUsage(task, params.usage);
    const summary = summarizeTask(task);
    if (task.status === 'dead') {
      this.ctx.bus.publish('task.dead', { task: summary });
      this.released(written);
    } else {
      this.ctx.bus.publish('task.failed', { task: summary });
      if (task.status === 'queued') {
        this.ctx.bus.publish('tasks.available', { byRequirement: { [taskRequirementKey(task)]: 1 } });
      } else this.timers.scheduled.poke(task.runAt);
    }
    return task;
  }

  /**
   * The agent gives the task back for later (its provider answered 429, say): back in the queue
   * after delayMs, and the attempt its claim counted is taken back. Answered without its payload
   * (TaskWithoutPayload): an agent whose provider is rate limited may give many back.
   */
  async release(params: { id: number; agentId: string; delayMs: number; reason?: string; usage?: TaskUsage }): Promise<TaskWithoutPayload> {
    const now = this.ctx.now();
    const runAt = now + params.delayMs;
    const error = { code: 'FLEETD_ERR_RELEASED', message: params.reason ?? 'released by its agent for later', delayMs: params.delayMs };
    const written = await this.ctx.store.taskRelease({ id: params.id, agentId: params.agentId, now, status: initialStatus(runAt, now), runAt, error });
    const task = await this.leaseHeld(written, params.id, params.agentId);
    await this.recordUsage(task, params.usage);
    this.ctx.bus.publish('task.requeued', { task: summarizeTask(task), reason: 'released' });
    if (task.status === 'queued') this.ctx.bus.publish('tasks.available', { byRequirement: { [taskRequirementKey(task)]: 1 } });
    else this.timers.scheduled.poke(task.runAt);
    return task;
  }

  /** The task with its lease renewed, without its payload (TaskWithoutPayload): an agent extends every half lease, and has the payload. */
  async extend(params: { id: number; agentId: string; leaseMs?: number }): Promise<TaskWithoutPayload> {
    const task = await this.leaseHeld(await this.ctx.store.taskExtendLease({ ...params, now: this.ctx.now() }), params.id, params.agentId);
    this.ctx.bus.publish('task.extended', { task: summarizeTask(task) });
    if (task.leaseExpiresAt !== null) this.timers.leases.poke(task.leaseExpiresAt);
    return task;
  }

  /**
   * The task a write that needed the agent's lease wrote, or why it was refused (rules/tasks.ts
   * leaseHeld); a task of another namespace than the agent's is as missing. Only a refusal reads
   * the agent: a task leased to it is of its namespace, since claims never cross.
   */
  private async leaseHeld<T extends TaskWithoutPayload>(written: TaskWrite<T>, id: number, agentId: string): Promise<T> {
    if (!written.task && written.current) {
      const agent = await this.ctx.store.agentGet({ id: agentId });
      if (agent && agent.namespace !== written.current.namespace) throw notFound('task', id);
    }
    return leaseHeld(written, id, agentId);
  }

  /** A leased task's agent is told to stop (the gateway, on task.cancelled), with `reason`. */
  async cancel(id: number, reason?: string, namespaces?: NamespaceFilter): Promise<Task> {
    // A key that reaches some namespaces only reads the task first: one out of its reach is as missing.
    if (namespaces !== undefined) await this.visible(id, namespaces);
    const error = cancelledError(reason);
    const written = await this.ctx.store.taskCancel({ id, now: this.ctx.now(), from: CANCELLABLE, error });
    const task = stateAllowed(written, id, 'cancel');
    this.ctx.bus.publish('task.cancelled', { task: summarizeTask(task) });
    this.released(written);
    return task;
  }

  /**
   * One action on every task the filter matches, in chunks of bounded size: `matched` tasks match,
   * `eligible` of them are in a status the action applies to, `changed` were changed (none with
   * dryRun). Each changed task publishes its event as a single action would: a cancelled one's
   * agent is told to stop, a retried one wakes agents.
   */
  async bulk(params: { action: BulkAction; filter?: TaskBulkFilter; namespaces?: NamespaceFilter; dryRun?: boolean }): Promise<{ matched: number; eligible: number; changed: number }> {
    const filter: TaskBulkFilter = { ...bulkFilter(params.filter), namespaces: params.namespaces };
    const from = bulkFrom(params.action);
    const { matched, eligible } = await this.ctx.store.taskBulkCount({ filter, from });
    if (params.dryRun || eligible === 0) return { matched, eligible, changed: 0 };
    const limit = this.ctx.maintenance.batchSize;
    const error = cancelledError('cancelled in bulk');
    let changed = 0;
    for (;;) {
      const { tasks, released } = await this.ctx.store.taskBulkApply({ action: params.action, filter, from, now: this.ctx.now(), limit, error });
      changed += tasks.length;
      const available: Record<string, number> = {};
      for (const task of tasks) {
        const summary = summarizeTask(task);
        if (params.action === 'cancel') this.ctx.bus.publish('task.cancelled', { task: summary });
        else if (params.action === 'delete') this.ctx.bus.publish('task.deleted', { task: summary });
        else {
          this.ctx.bus.publish('task.retried', { task: summary });
          const key = taskRequirementKey(task);
          available[key] = (available[key] ?? 0) + 1;
        }
      }
      if (Object.keys(available).length > 0) this.ctx.bus.publish('tasks.available', { byRequirement: available });
      if (released.length > 0) this.publishReleased(released);
      if (tasks.length < limit) return { matched, eligible, changed };
    }
  }

  async retry(id: number, namespaces?: NamespaceFilter): Promise<Task> {
    if (namespaces !== undefined) await this.visible(id, namespaces);
    const task = stateAllowed(await this.ctx.store.taskRetry({ id, now: this.ctx.now(), from: RETRYABLE }), id, 'retry');
    this.ctx.bus.publish('task.retried', { task: summarizeTask(task) });
    this.ctx.bus.publish('tasks.available', { byRequirement: { [taskRequirementKey(task)]: 1 } });
    return task;
  }
}
