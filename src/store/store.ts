import type { Namespace, NamespaceQuotas } from '../domain/namespaces.js';
import type { ActivityStore } from './activity-store.js';
import type { AuditStore } from './audit-store.js';
import type { ScheduleStore } from './schedule-store.js';
import type { Agent, AgentCount, ApiKey, TaskWithoutPayload, Scope, AgentStatus, Lock, OnDependencyFailure, Page, Task, TaskCount, TaskDependency, TaskStatus } from '../domain/types.js';
import type { NamespaceFilter } from '../domain/namespaces.js';
import type { AdmissionState, FleetUsage, HoldReason, QueuedGroup, TaskUsage, TypePause, TypePolicy, TypePolicyRecord, TypeUsage } from '../domain/type-policies.js';

/**
 * The storage contract of the queue. It speaks the queue's behaviour (claim, extend a lease, rescue
 * expired leases), not SQL, so that `core/` never sees a driver. Every write is atomic: it happens
 * whole or not at all, and its promise resolves only after it is durable (committed).
 *
 * Drivers persist decisions; they never make them. Core decides every outcome (dead or re-queue
 * and the retry time, the idempotency outcome, lock conflicts, why a write was refused) and hands
 * the driver either the decision or, where it must be taken inside the driver's transaction, the
 * rule as a function (`endLease`, `onRepeat`, `decide`) that the driver calls between its read and
 * its write. A write whose condition did not hold is not an error for the driver: it returns what
 * it found, and core says why.
 *
 * Every call takes one params object. `now` is passed in by core so that the store never reads
 * the clock itself: all drivers agree on time, and tests can move it.
 */
export interface Store extends AgentStore, TaskStore, LockStore, KeyStore, NamespaceStore, ActivityStore, TaskBulkStore, ScheduleStore, AuditStore, TypeStore {
  /** The driver's name, for /readyz and logs. */
  readonly driver: string;
  /**
   * True when the writes started in one turn of the event loop run in that order, in one
   * transaction (SQLite's group commit): a claim started just after a completion sees the room it
   * freed. False where they may run at once on separate connections (PostgreSQL's tick batchers).
   */
  readonly writesInStartOrder: boolean;
  ping(): Promise<void>;
  /** Connection pool use, for drivers that pool connections (metrics, /readyz). */
  poolStats?(): PoolStats;
  /** Transactions committed since start and the writes they carried, for drivers that group writes into commits (metrics). */
  commitStats?(): CommitStats;
}

/** Agents: registration, heartbeats, staleness, and taking agents offline. */
export interface AgentStore {
  agentCreateMany(params: AgentCreateParams[]): Promise<Agent[]>;
  agentGet(params: { id: string }): Promise<Agent | undefined>;
  /** The agent whose token has this hash, with its namespace, for authentication; tokens are stored hashed only. */
  agentByTokenHash(params: { hash: string }): Promise<{ id: string; namespace: string } | undefined>;
  agentList(params: AgentListParams): Promise<Page<Agent>>;
  /** Records a heartbeat and brings a stale or offline agent back online. */
  agentHeartbeat(params: { id: string; now: number }): Promise<AgentHeartbeatResult | undefined>;
  /**
   * Records when online agents were last seen, in one write, never moving a time back. Agents
   * that are no longer online (or gone) are left untouched and their ids answered.
   */
  agentTouchMany(params: { seen: { id: string; at: number }[] }): Promise<string[]>;
  /** Marks agents stale whose last heartbeat is older than staleBefore, in bounded batches. */
  agentMarkStale(params: { staleBefore: number; now: number; limit: number }): Promise<string[]>;
  /** Takes agents offline whose last heartbeat is older than offlineBefore: their locks go, their leases end by `endLease`. */
  agentReapOffline(params: { offlineBefore: number; now: number; limit: number; endLease: EndLease }): Promise<AgentReleaseResult[]>;
  agentDelete(params: { id: string; now: number; endLease: EndLease }): Promise<AgentReleaseResult | undefined>;
  /**
   * Takes one agent offline now (its WebSocket grace ran out): its locks go, its leases end by
   * `endLease`. Undefined when there is no such agent, or when its heartbeat was written after
   * `unlessSeenAfter` (another node welcomed it back): then nothing changes.
   */
  agentRelease(params: { id: string; now: number; endLease: EndLease; unlessSeenAfter: number }): Promise<AgentReleaseResult | undefined>;
  /** The earliest heartbeat time among online and stale agents, to time the next reap. */
  agentOldestHeartbeat(params: { status: AgentStatus }): Promise<number | null>;
  /** Agents by status, of the namespaces of the filter (all when undefined). */
  agentCounts(params?: { namespaces?: NamespaceFilter }): Promise<AgentCount[]>;
}

/** Tasks: the queue itself. */
export interface TaskStore {
  /**
   * Inserts tasks in order, all or nothing. A task whose idempotency key exists already is not
   * inserted again: `onRepeat` is called with the existing task (inside the write, so that a
   * refusal writes nothing of the batch) and, unless it throws, the existing task is returned
   * with `created: false`.
   */
  taskInsertMany(params: { tasks: TaskInsertParams[]; now: number; onRepeat: RepeatCheck; onLinks?: LinkCheck }): Promise<TaskInsertResult[]>;
  taskGet(params: { id: number }): Promise<Task | undefined>;
  taskList(params: TaskListParams): Promise<Page<Task>>;
  /** Leases up to `max` queued tasks the agent can do: priority desc, then oldest first. */
  taskClaim(params: TaskClaimParams): Promise<TaskClaimResult>;
  /** The tasks leased to the agent by these claims (their `claimId`s) and leased to it still. */
  taskLeasedByClaims(params: { agentId: string; claimIds: readonly number[] }): Promise<Task[]>;
  /**
   * Completes the task if the agent holds its lease. `resultJson`, when given, is `result`'s JSON
   * text (the caller checked its size with it): stored as it is, and the task answered with
   * `result` as given rather than parsed back from the row. The task is answered without its
   * payload (TaskWithoutPayload), which the completion does not read back.
   */
  taskComplete(params: { id: number; agentId: string; result: unknown; resultJson?: string; now: number }): Promise<TaskWrite<TaskWithoutPayload>>;
  /** Ends the agent's lease on the task as `endLease` decides; answers it without its payload (TaskWithoutPayload). */
  taskFail(params: { id: number; agentId: string; now: number; endLease: EndLease }): Promise<TaskWrite<TaskWithoutPayload>>;
  /**
   * Gives the agent's leased task back as core decided (queued now, or scheduled at runAt), taking
   * back the attempt its claim counted, and records `error` (why); only if the agent holds the lease.
   * The task is answered without its payload (TaskWithoutPayload), which is not read.
   */
  taskRelease(params: { id: number; agentId: string; now: number; status: 'queued' | 'scheduled'; runAt: number; error: unknown }): Promise<TaskWrite<TaskWithoutPayload>>;
  /**
   * Renews the lease for leaseMs from now (the task's own leaseMs when omitted), if the agent holds
   * it. The task is answered without its payload (TaskWithoutPayload), which is not read.
   */
  taskExtendLease(params: { id: number; agentId: string; leaseMs?: number; now: number }): Promise<TaskWrite<TaskWithoutPayload>>;
  /** Cancels the task if its status is one of `from`, recording `error` (core's, with the reason). */
  taskCancel(params: { id: number; now: number; from: readonly TaskStatus[]; error: unknown }): Promise<TaskWrite>;
  /** Puts the task back in the queue, attempts reset, if its status is one of `from`. */
  taskRetry(params: { id: number; now: number; from: readonly TaskStatus[] }): Promise<TaskWrite>;
  /** Ends leases that expired before `now` as `endLease` decides, in bounded batches. */
  taskRescueExpiredLeases(params: { now: number; limit: number; endLease: EndLease }): Promise<TaskTransition[]>;
  /** Moves scheduled tasks whose runAt has come into the queue, in bounded batches. */
  taskPromoteScheduled(params: { now: number; limit: number }): Promise<TaskTransition[]>;
  /**
   * Deletes up to `limit` finished tasks: those that finished before `before`, then, with
   * keepNewest, those beyond the keepNewest most recently finished. Returns how many went.
   */
  taskDeleteFinished(params: { before: number; keepNewest?: number; limit: number }): Promise<number>;
  /** The next time a lease expires and a scheduled task comes due, to set the maintenance timers. */
  taskNextDeadlines(): Promise<{ leaseExpiresAt: number | null; runAt: number | null }>;
  /** Tasks by (type, priority, status), of the namespaces of the filter (all when undefined); by namespace too with `byNamespace`. */
  taskCounts(params?: { namespaces?: NamespaceFilter; byNamespace?: boolean }): Promise<TaskCount[]>;
  /** The dependencies of each task, with the outcomes copied when each finished, keyed by task id. */
  taskDependencies(params: { ids: number[] }): Promise<Map<number, TaskDependency[]>>;
  /**
   * Sends queued and scheduled tasks whose expiresAt has passed (nobody claimed them in their
   * scheduleTimeoutMs) to dead with `error`, in bounded batches. A claim never takes such a task.
   */
  taskExpireUnclaimed(params: { now: number; limit: number; error: unknown }): Promise<TaskTransition[]>;
  /** The earliest expiresAt among unclaimed tasks, to time the next expiry sweep. */
  taskNextExpiry(): Promise<number | null>;
}

/** Actions on every task a filter matches (`POST /v1/tasks/bulk`). */
export interface TaskBulkStore {
  /** How many tasks the filter matches, and how many of those are in one of `from`. */
  taskBulkCount(params: { filter: TaskBulkFilter; from: readonly TaskStatus[] }): Promise<{ matched: number; eligible: number }>;
  /**
   * Applies the action to up to `limit` matching tasks in one of `from`, lowest ids first, in one
   * write; returns them as written (deleted ones as they were). A changed task leaves `from`, so
   * calling again until fewer than `limit` come back reaches every one. `released`: tasks that
   * waited on cancelled ones, cancelled or released in the same write (as a single cancel does).
   */
  taskBulkApply(params: TaskBulkApplyParams): Promise<{ tasks: Task[]; released: TaskTransition[] }>;
}

export interface TaskBulkFilter {
  /** Only tasks of these namespaces (all when undefined). */
  namespaces?: NamespaceFilter;
  status?: TaskStatus;
  tag?: string;
  type?: string;
  /** Epoch ms: tasks created before it. */
  createdBefore?: number;
}

export interface TaskBulkApplyParams {
  action: 'retry' | 'cancel' | 'delete';
  filter: TaskBulkFilter;
  /** Decided by core: the statuses the action applies to. */
  from: readonly TaskStatus[];
  now: number;
  limit: number;
  /** The error a cancel records (core's). */
  error: unknown;
}

/** Locks on named resources. */
export interface LockStore {
  /**
   * Reads the holders of the resources (locked against concurrent acquirers) and lets `decide`
   * say whether to take them: a conflict writes nothing; otherwise the expired locks it names
   * are replaced by the new one, which takes every resource.
   */
  lockAcquire(params: LockAcquireParams): Promise<LockAcquireResult>;
  /**
   * Deletes the lock if it exists and, with `holder`, is held by that agent. Otherwise returns it
   * as it is (undefined: there is no such lock), for core to say why.
   */
  lockRelease(params: { id: string; holder?: string }): Promise<{ released: Lock; current?: undefined } | { released: undefined; current: Lock | undefined }>;
  lockGet(params: { id: string }): Promise<Lock | undefined>;
  /** Moves the lock's expiry to `expiresAt` if it has not lapsed (before `now`) and, with `holder`, is that agent's; else returns it as it is. */
  lockRenew(params: { id: string; holder?: string; expiresAt: number; now: number }): Promise<{ renewed: Lock; current?: undefined } | { renewed: undefined; current: Lock | undefined }>;
  lockList(params: LockListParams): Promise<Page<Lock>>;
  lockExpire(params: { now: number; limit: number }): Promise<Lock[]>;
  lockNextExpiry(): Promise<number | null>;
  /**
   * Puts a request that will wait for `resources` at the end of its namespace's line (shared by
   * every node on the store) until `deadline`; returns its place. Requests whose deadline passed are dropped.
   */
  lockWaitJoin(params: { namespace: string; resources: string[]; deadline: number; now: number }): Promise<number>;
  /** Takes a request out of the line (it gave up, or its wait ran out). */
  lockWaitLeave(params: { seq: number }): Promise<void>;
}

/** API keys, stored by hash, and the namespaces they reach. */
export interface KeyStore {
  /**
   * Stores a key by its hash. With onlyIfNone it is stored only while no key exists at all (the
   * admin key of a first start), and the result is undefined when one did.
   */
  apiKeyInsert(params: ApiKeyInsertParams): Promise<ApiKey | undefined>;
  /**
   * The key whose secret, or whose previous secret (kept after a rotation), has this hash, unless it
   * was revoked; `secret` says which matched. Whether it has expired is core's to decide.
   */
  apiKeyByHash(params: { hash: string }): Promise<{ key: ApiKey; secret: 'current' | 'previous' } | undefined>;
  /** Every key, revoked ones too, oldest first. */
  apiKeyList(): Promise<ApiKey[]>;
  /** Revokes the key; undefined when there is no such key. Revoking twice keeps the first time. */
  apiKeyRevoke(params: { id: string; now: number }): Promise<ApiKey | undefined>;
  /**
   * Gives a live (unrevoked) key a new secret hash; its current one becomes its previous one, valid
   * until previousExpiresAt (replacing any earlier previous one). `expiresAt`, when given, replaces
   * the key's expiry. Undefined when there is no live key of that id.
   */
  apiKeyRotate(params: { id: string; hash: string; now: number; previousExpiresAt: number; expiresAt?: number | null }): Promise<ApiKey | undefined>;
}

/** The namespaces known (each key's, and those given quotas) with their quotas. */
export interface NamespaceStore {
  /** Every known namespace, by name. */
  namespaceList(): Promise<Namespace[]>;
  namespaceGet(params: { name: string }): Promise<Namespace | undefined>;
  /** Sets a namespace's quotas, making it known if it was not. */
  namespacePut(params: { name: string; quotas: NamespaceQuotas; now: number }): Promise<Namespace>;
}

/**
 * A conditional write on one task: the task after it, or, when its condition (the agent's lease,
 * an allowed status) did not hold, the task as it is now (undefined: no such task). `released`:
 * the waiting tasks the write finished (from 'waiting' to queued, scheduled or cancelled), in the
 * same transaction; a write that ends leases in bulk (rescue, agent release) lists them among its
 * transitions, `from: 'waiting'`.
 */
export type TaskWrite<T extends TaskWithoutPayload = Task> =
  | { task: T; current?: undefined; released?: TaskTransition[] }
  | { task: undefined; current: Task | undefined; released?: undefined };

/** A lease about to end without a result, as `EndLease` sees it. */
export interface EndingLease {
  id: number;
  agentId: string;
  /** Attempts made, the one ending included. */
  attempts: number;
  maxAttempts: number;
  backoffMs: number;
  /** When this attempt was claimed. */
  claimedAt: number;
  executionTimeoutMs: number | null;
}

/** How a lease ends without a result: dead, or back to the queue at runAt; with the error to record. */
export type LeaseEnd = { status: 'dead'; error: unknown } | { status: 'queued' | 'scheduled'; runAt: number; error: unknown };

/** Core's rule for leases that end without a result; a driver calls it, inside its write, for each lease it ends. */
export type EndLease = (lease: EndingLease) => LeaseEnd;

/**
 * Core's rule for an idempotency key used again, called inside the insert for each item whose key
 * exists (`index` in the batch); it throws to refuse the batch.
 */
export type RepeatCheck = (repeat: { index: number; existing: { id: number; requestHash: string | null } }) => void;

/**
 * Core's rule for a new task with a parent or dependencies, called inside the insert with what the
 * store found of them in the task's own namespace (one in another namespace is not found) (locked against their completion, on PostgreSQL): it throws to refuse the
 * whole batch (a task that does not exist), or answers the task's first status and how many of its
 * dependencies are still to finish.
 */
export type LinkCheck = (found: { index: number; parentFound: boolean; dependencies: LinkedDependency[] }) => LinkStart;

/** A dependency as a new task finds it: its status now. */
export interface LinkedDependency {
  id: number;
  status: TaskStatus;
}

export interface LinkStart {
  status: 'waiting' | 'queued' | 'scheduled' | 'cancelled';
  pending: number;
}

/** A new task's parent and dependencies, as submitted. */
export interface TaskLinks {
  parentId: number | null;
  dependsOn: number[];
  onDependencyFailure: OnDependencyFailure;
}

/** The current holder of one resource a lock asks for. */
export interface LockHolder {
  resource: string;
  lockId: string;
  agentId: string;
  expiresAt: number;
}

export type LockDecision = { acquire: true; replace: string[] } | { acquire: false; conflicts: LockHolder[] };

export interface ApiKeyInsertParams {
  id: string;
  name: string;
  scope: Scope;
  hash: string;
  /** The namespaces it reaches (`*`: all); those not known yet become known in the same write. */
  namespaces: string[];
  now: number;
  onlyIfNone?: boolean;
  /** When the key stops working; null or absent: never. */
  expiresAt?: number | null;
}

/** SQLite's group commit (see group-commit.ts): writes ÷ commits is how many writes share each commit. */
export interface CommitStats {
  commits: number;
  writes: number;
  /** Seconds the event loop spent committing. */
  commitSeconds: number;
  /** WAL checkpoints run off the event loop that copied pages into the database file (SQLite's checkpoint thread). */
  checkpoints: number;
}

export interface PoolStats {
  /** Most connections the pool opens. */
  size: number;
  /** Connections open now: in use plus idle. */
  total: number;
  inUse: number;
  idle: number;
  /** Queries waiting for a connection. */
  waiting: number;
}

export interface AgentCreateParams {
  id: string;
  namespace: string;
  name: string;
  capabilities: string[];
  labels: Record<string, string>;
  maxConcurrency: number;
  tokenHash: string;
  now: number;
}

export interface AgentListParams {
  /** Only agents of these namespaces (all when undefined). */
  namespaces?: NamespaceFilter;
  status?: AgentStatus;
  capability?: string;
  limit: number;
  cursor?: string;
}

export interface AgentHeartbeatResult {
  agent: Agent;
  previousStatus: AgentStatus;
}

export interface AgentReleaseResult {
  agent: Agent;
  /** Tasks that were leased to the agent and went back to the queue or to dead. */
  tasks: TaskTransition[];
  locks: Lock[];
}

export interface TaskInsertParams {
  namespace: string;
  type: string;
  /** Decided by core: queued, or scheduled when runAt lies ahead (with links, onLinks decides inside the insert). */
  status: 'queued' | 'scheduled';
  payload: unknown;
  /** `JSON.stringify(payload)`, where core has it already (its size check): stored as it is. */
  payloadJson?: string;
  priority: number;
  requires: string[];
  /** Unique within the task's namespace. */
  idempotencyKey: string | null;
  /** What the idempotency key is bound to (null without a key), computed by core. */
  requestHash: string | null;
  maxAttempts: number;
  leaseMs: number;
  backoffMs: number;
  runAt: number;
  executionTimeoutMs: number | null;
  scheduleTimeoutMs: number | null;
  /** Decided by core: when the task expires unless claimed first (null: never). */
  expiresAt: number | null;
  tags: string[];
  metadata: Record<string, unknown>;
  /** A parent or dependencies: the store asks `onLinks` for the first status. */
  links?: TaskLinks;
  /** The tenant, user or repository the task is for: claims take turns across keys. Null or absent: no key. */
  concurrencyKey?: string | null;
  /** Resources locked for the task while it is leased; absent: none. */
  locks?: string[];
}

export interface TaskInsertResult {
  task: Task;
  created: boolean;
}

export interface TaskListParams {
  /** Only tasks of these namespaces (all when undefined). */
  namespaces?: NamespaceFilter;
  status?: TaskStatus;
  /** Tasks that carry this tag. */
  tag?: string;
  type?: string;
  agentId?: string;
  /** The children of this task. */
  parentId?: number;
  limit: number;
  cursor?: string;
  /** Newest first (desc, the default) for browsing; oldest first (asc) for exports. */
  order?: 'asc' | 'desc';
}

export interface TaskClaimParams {
  agentId: string;
  /** At most this many; fewer when the agent's maxConcurrency leaves less room. */
  max: number;
  now: number;
  /**
   * Written on every task the claim leases (claim_id), so that a claim whose answer was lost can be
   * read back (core/delivery.ts). A safe integer unique to the claim among the agent's.
   */
  claimId?: number;
  /**
   * Core's rule of fair sharing (policies, pauses, turns across keys), called inside the claim's
   * transaction. Core always passes it; without it (tests of the queue alone) a claim takes the
   * plain order, priority then age, and no policy applies.
   */
  plan?: PlanClaim;
}

/**
 * A claim counts as its agent's heartbeat, but an online agent's is written at most this often: a
 * busy agent claims many times a second, and staleness is measured in tens of seconds.
 */
export const CLAIM_BEAT_WRITE_MS = 1_000;

/** A claim also counts as the agent's heartbeat, so it reports the agent as it is after the claim. */
export interface TaskClaimResult {
  agent: Agent;
  previousStatus: AgentStatus;
  tasks: Task[];
  /** How many more tasks the agent may hold after this claim (maxConcurrency − in flight). */
  room: number;
  /** Queued tasks the agent could do that a policy or a pause held back, by requirement key. */
  heldBack: Record<string, number>;
  /** When a hold that ends with time (a pause's end, a rate window) next frees a task; null: none. */
  retryAt: number | null;
}

/** A task that moved from one status to another outside a request (expiry, promotion, release). */
export interface TaskTransition {
  /** Without its payload when a lease ended (TaskWithoutPayload): what announces it needs none. */
  task: TaskWithoutPayload;
  from: TaskStatus;
}

export interface LockAcquireParams {
  id: string;
  /** Holders and the line are looked for in this namespace only; the lock is taken in it. */
  namespace: string;
  agentId: string;
  resources: string[];
  ttlMs: number;
  description: string;
  now: number;
  /** Core's rule, given the holders of the resources in the order asked for. */
  decide: (holders: LockHolder[]) => LockDecision;
  /**
   * Where holders may be, as core's lockProbes says (directories); absent, the resources
   * themselves. Acquirers take turns on `roots` where the store lets others run at once.
   */
  probes?: { exact: string[]; under: string[]; roots: string[] };
  /**
   * A request waiting in line (lockWaitJoin): in the same write, the requests ahead of it that are
   * still waiting in its namespace (before `seq`, deadline after `now`) are read and `mayGo` says whether any is in
   * its way; if so nothing is taken (conflicts: none). Taking the lock takes it out of the line.
   */
  line?: { seq: number; mayGo: (ahead: LockWaiter[]) => boolean };
}

/** A request waiting in the line for its resources. */
export interface LockWaiter {
  seq: number;
  resources: string[];
  deadline: number;
}

export type LockAcquireResult = { acquired: true; lock: Lock } | { acquired: false; conflicts: LockHolder[] };

export interface LockListParams {
  namespaces?: NamespaceFilter;
  agentId?: string;
  limit: number;
  cursor?: string;
}

/**
 * Policies and pauses per task type of a namespace; what the claim's admission reads, and what
 * /v1/types shows. A type is always its namespace's: the same name in two namespaces shares nothing.
 */
export interface TypeStore {
  typePolicyPut(params: { namespace: string; type: string; policy: TypePolicy; now: number }): Promise<TypePolicyRecord>;
  typePolicyGet(params: { namespace: string; type: string }): Promise<TypePolicyRecord | undefined>;
  /** Pauses the type (key null) or one key of it until `until` (null: until resumed); a pause of the same scope is replaced. */
  typePause(params: { namespace: string; type: string; key: string | null; until: number | null; reason: string | null; now: number }): Promise<TypePause>;
  /** Ends the pause of the type (key null) or of one key; with `allKeys`, every pause of the type. Returns the pauses ended. */
  typeResume(params: { namespace: string; type: string; key: string | null; allKeys: boolean }): Promise<TypePause[]>;
  /** Whether any task of this type exists in the namespace, whatever its status, or the type has a policy there. */
  typeExists(params: { namespace: string; type: string }): Promise<boolean>;
  /** Records what a task of the type (and key, '' for none) reported it used. */
  usageRecord(params: { namespace: string; type: string; key: string; usage: TaskUsage; now: number }): Promise<void>;
  /** The type's usage since `hourFrom` and since `dayFrom`, in all and per key; old reports (before dayFrom) may be pruned. */
  usageSummary(params: { namespace: string; type: string; hourFrom: number; dayFrom: number }): Promise<TypeUsage>;
  /**
   * Every type's usage in the namespaces (all when undefined) since `hourFrom` and since `dayFrom`,
   * summed by type over them (as usageSummary, for all types at once); reports before dayFrom may be pruned.
   */
  usageTotals(params: { namespaces?: NamespaceFilter; hourFrom: number; dayFrom: number }): Promise<FleetUsage>;
  /** Everything admission reads, for every type (or one, in every namespace), and the queued groups: the view of /v1/types. */
  typeOverview(params: { now: number; type?: string }): Promise<{ state: AdmissionState; groups: QueuedGroup[] }>;
}

/** What a claim asks core's rule of fair sharing, inside its transaction (see core/rules/admission.ts). */
/** No idempotency key holds it (core refuses one that does): a driver may use it to keep keys per namespace (rows.ts). */
export const IDEMPOTENCY_KEY_SEPARATOR = '\u001f';

/** The lock a leased task holds on its resources, named task-<id>, ending with the lease. */
export const taskLockId = (taskId: number): string => `task-${taskId}`;

/** How long a task's lock lasts in itself: it ends with the lease, never by its TTL (ten years, a time every date format still holds). */
export const TASK_LOCK_TTL_MS = 10 * 365 * 24 * 3600 * 1000;

export interface ClaimPlan {
  /** The groups to take the next task from (the oldest task among them goes), or undefined: nothing more may go. */
  next(): QueuedGroup[] | undefined;
  /** One task of this group (an object `next` returned) was leased. */
  took(group: QueuedGroup): void;
  /** These groups had no task left to take (another claim took them meanwhile). */
  exhausted(groups: QueuedGroup[]): void;
  /** Why this group is held back now, or null. */
  hold(group: QueuedGroup): HoldReason | null;
  /** The oldest task of this group could not take its locks: it waits (held back), and the group's next task may go. */
  lockedOut(group: QueuedGroup): void;
  /** Core's lock rules, for a task's locks taken with its lease. */
  locks: {
    probes(resources: string[]): { exact: string[]; under: string[]; roots: string[] };
    decide(holders: LockHolder[]): LockDecision;
    /** A claim's place in the line of lock requests waiting: behind all of them (see LockAcquireParams.line). */
    line(resources: string[]): NonNullable<LockAcquireParams['line']>;
  };
  /** The round-robin's state to write: the clock of each namespace served and the passes of the keys served. */
  fairUpdates(): { clocks: { namespace: string; clock: number }[]; passes: { namespace: string; key: string; pass: number }[] };
  /** Starts to record for the rate limits, at the claim's time. */
  starts(): { namespace: string; type: string; key: string }[];
  heldBack(): Record<string, number>;
  retryAt(): number | null;
}

export type PlanClaim = (state: AdmissionState, groups: QueuedGroup[], now: number) => ClaimPlan;
