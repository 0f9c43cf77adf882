import type { Agent, AgentCount, ApiKey, Scope, AgentStatus, Lock, Page, Task, TaskCount, TaskStatus } from '../domain/types.js';

/**
 * The storage contract. It speaks the queue's behaviour (claim, extend a lease, rescue expired
 * leases), not SQL, so that `core/` never sees a driver. Every write is atomic: it happens whole
 * or not at all, and its promise resolves only after it is durable (committed).
 *
 * Every call takes one params object. `now` is passed in by core so that the store never reads
 * the clock itself: all drivers agree on time, and tests can move it.
 */
export interface Store {
  readonly driver: string;
  /** True when wake-ups from other processes sharing the store arrive by themselves (LISTEN/NOTIFY). */
  readonly supportsListen: boolean;

  migrate(): Promise<void>;
  ping(): Promise<void>;
  close(): Promise<void>;
  /**
   * With supportsListen: calls `onAvailable` when another process sharing the store makes tasks
   * claimable (counts by requirement key), so that long-polls on this node wake up. Returns the
   * function that stops listening.
   */
  listen?(onAvailable: (byRequirement: Record<string, number>) => void): Promise<() => Promise<void>>;
  /** Connection pool use, for drivers that pool connections (metrics, /readyz). */
  poolStats?(): PoolStats;

  agentCreateMany(params: AgentCreateParams[]): Promise<Agent[]>;
  agentGet(params: { id: string }): Promise<Agent | undefined>;
  /** The agent whose token has this hash, for authentication; tokens are stored hashed only. */
  agentIdByTokenHash(params: { hash: string }): Promise<string | undefined>;
  agentList(params: AgentListParams): Promise<Page<Agent>>;
  /** Records a heartbeat and brings a stale or offline agent back online. */
  agentHeartbeat(params: { id: string; now: number }): Promise<AgentHeartbeatResult | undefined>;
  /** Marks agents stale whose last heartbeat is older than staleBefore, in bounded batches. */
  agentMarkStale(params: { staleBefore: number; now: number; limit: number }): Promise<string[]>;
  /** Takes agents offline whose last heartbeat is older than offlineBefore: their locks go, their leased tasks return. */
  agentReapOffline(params: { offlineBefore: number; now: number; limit: number }): Promise<AgentReleaseResult[]>;
  agentDelete(params: { id: string; now: number }): Promise<AgentReleaseResult | undefined>;
  /** Takes one agent offline now (its WebSocket grace ran out): its locks go, its leased tasks return. */
  agentRelease(params: { id: string; now: number }): Promise<AgentReleaseResult | undefined>;
  /** The earliest heartbeat time among online and stale agents, to time the next reap. */
  agentOldestHeartbeat(params: { status: AgentStatus }): Promise<number | null>;
  agentCounts(): Promise<AgentCount[]>;

  /**
   * Inserts tasks in order, all or nothing. A task whose idempotency key exists already is not
   * inserted again: the existing task is returned with `created: false`.
   */
  taskInsertMany(params: { tasks: TaskInsertParams[]; now: number }): Promise<TaskInsertResult[]>;
  taskGet(params: { id: number }): Promise<Task | undefined>;
  taskList(params: TaskListParams): Promise<Page<Task>>;
  /** Leases up to `max` queued tasks the agent can do: priority desc, then oldest first. */
  taskClaim(params: TaskClaimParams): Promise<TaskClaimResult>;
  taskComplete(params: { id: number; agentId: string; result: unknown; now: number }): Promise<Task>;
  taskFail(params: TaskFailParams): Promise<Task>;
  /** Renews the lease for leaseMs from now (the task's own leaseMs when omitted). */
  taskExtendLease(params: { id: number; agentId: string; leaseMs?: number; now: number }): Promise<Task>;
  taskCancel(params: { id: number; now: number }): Promise<Task>;
  /** Puts a dead or cancelled task back in the queue with its attempts reset. */
  taskRetry(params: { id: number; now: number }): Promise<Task>;
  /** Returns leases that expired before `now` to the queue (or to dead), in bounded batches. */
  taskRescueExpiredLeases(params: { now: number; limit: number }): Promise<TaskTransition[]>;
  /** Moves scheduled tasks whose runAt has come into the queue, in bounded batches. */
  taskPromoteScheduled(params: { now: number; limit: number }): Promise<TaskTransition[]>;
  /**
   * Deletes up to `limit` finished tasks: those that finished before `before`, then, with
   * keepNewest, those beyond the keepNewest most recently finished. Returns how many went.
   */
  taskDeleteFinished(params: { before: number; keepNewest?: number; limit: number }): Promise<number>;
  /** The next time a lease expires and a scheduled task comes due, to set the maintenance timers. */
  taskNextDeadlines(): Promise<{ leaseExpiresAt: number | null; runAt: number | null }>;
  taskCounts(): Promise<TaskCount[]>;

  /** Takes every resource or none: a conflict returns the holders and writes nothing. */
  lockAcquire(params: LockAcquireParams): Promise<LockAcquireResult>;
  lockRelease(params: { id: string; agentId?: string }): Promise<Lock | undefined>;
  lockGet(params: { id: string }): Promise<Lock | undefined>;
  lockList(params: LockListParams): Promise<Page<Lock>>;
  lockExpire(params: { now: number; limit: number }): Promise<Lock[]>;
  lockNextExpiry(): Promise<number | null>;

  /**
   * Stores a key by its hash. With onlyIfNone it is stored only while no key exists at all (the
   * admin key of a first start), and the result is undefined when one did.
   */
  apiKeyInsert(params: ApiKeyInsertParams): Promise<ApiKey | undefined>;
  /** The key with this hash, unless it was revoked. */
  apiKeyByHash(params: { hash: string }): Promise<ApiKey | undefined>;
  /** Every key, revoked ones too, oldest first. */
  apiKeyList(): Promise<ApiKey[]>;
  /** Revokes the key; undefined when there is no such key. Revoking twice keeps the first time. */
  apiKeyRevoke(params: { id: string; now: number }): Promise<ApiKey | undefined>;
}

export interface ApiKeyInsertParams {
  id: string;
  name: string;
  scope: Scope;
  hash: string;
  now: number;
  onlyIfNone?: boolean;
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
  name: string;
  capabilities: string[];
  labels: Record<string, string>;
  maxConcurrency: number;
  tokenHash: string;
  now: number;
}

export interface AgentListParams {
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
  type: string;
  payload: unknown;
  priority: number;
  requires: string[];
  idempotencyKey: string | null;
  maxAttempts: number;
  leaseMs: number;
  backoffMs: number;
  runAt: number;
}

export interface TaskInsertResult {
  task: Task;
  created: boolean;
}

export interface TaskListParams {
  status?: TaskStatus;
  type?: string;
  agentId?: string;
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
}

/** A claim also counts as the agent's heartbeat, so it reports the agent as it is after the claim. */
export interface TaskClaimResult {
  agent: Agent;
  previousStatus: AgentStatus;
  tasks: Task[];
  /** How many more tasks the agent may hold after this claim (maxConcurrency − in flight). */
  room: number;
}

export interface TaskFailParams {
  id: number;
  agentId: string;
  error: unknown;
  retryable: boolean;
  now: number;
  /** Delay before a retry, from the attempt just spent and the task's base backoff; core owns the policy. */
  retryDelay: (attempt: number, backoffMs: number) => number;
}

/** A task that moved from one status to another outside a request (expiry, promotion, release). */
export interface TaskTransition {
  task: Task;
  from: TaskStatus;
}

export interface LockAcquireParams {
  id: string;
  agentId: string;
  resources: string[];
  ttlMs: number;
  description: string;
  now: number;
}

export type LockAcquireResult =
  | { acquired: true; lock: Lock }
  | { acquired: false; conflicts: { resource: string; lockId: string; agentId: string; expiresAt: number }[] };

export interface LockListParams {
  agentId?: string;
  limit: number;
  cursor?: string;
}
