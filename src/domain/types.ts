/** The domain's public types: what the store keeps and the API returns. Times are epoch milliseconds. */

/**
 * A task's life: `waiting` (for its dependencies to finish) → `scheduled` (waits for runAt or a retry backoff) → `queued` (claimable) →
 * `leased` (held by one agent until leaseExpiresAt) → `completed`, or back to `queued`/`scheduled`
 * on failure or lease expiry, or `dead` once maxAttempts are spent. `cancelled` ends it early.
 */
export type TaskStatus = 'waiting' | 'scheduled' | 'queued' | 'leased' | 'completed' | 'dead' | 'cancelled';
export const TASK_STATUSES: readonly TaskStatus[] = ['waiting', 'scheduled', 'queued', 'leased', 'completed', 'dead', 'cancelled'];
export const TERMINAL_STATUSES: ReadonlySet<TaskStatus> = new Set(['completed', 'dead', 'cancelled']);

export interface Task {
  id: number;
  /** The namespace it belongs to: only agents of that namespace claim it, only keys reaching it see it. */
  namespace: string;
  type: string;
  /**
   * The payload as the JSON text it was stored as. fleetd never looks inside a payload, so it keeps
   * the text and hands it on whole: a long prompt is neither parsed nor turned into JSON again on
   * its way to an agent (wire.ts splices it into the answer); only an answer built as an object
   * (taskJson) parses it.
   */
  payloadJson: string;
  priority: number;
  /** Capabilities an agent must all have to claim the task. */
  requires: string[];
  status: TaskStatus;
  idempotencyKey: string | null;
  /** Number of times the task has been claimed. */
  attempts: number;
  maxAttempts: number;
  leaseMs: number;
  backoffMs: number;
  runAt: number;
  createdAt: number;
  updatedAt: number;
  claimedAt: number | null;
  completedAt: number | null;
  agentId: string | null;
  leaseExpiresAt: number | null;
  result: unknown;
  error: unknown;
  /** The longest one attempt may run from its claim, extensions included; null: no limit. */
  executionTimeoutMs: number | null;
  /** The longest the task may wait unclaimed after it first becomes due; null: no limit. */
  scheduleTimeoutMs: number | null;
  /** Labels to find the task by (`GET /v1/tasks?tag=`, bulk actions). */
  tags: string[];
  /** The submitter's own data about the task; fleetd only keeps it. */
  metadata: Record<string, unknown>;
  /** The task that spawned this one (submitted with parentId), if any. */
  parentId: number | null;
  /** How many tasks this one depends on, and how many of them have not finished yet. */
  dependencyCount: number;
  dependenciesPending: number;
  /** The dependencies with their outcomes: on a claimed task and on GET /v1/tasks/:id, when it has any. */
  dependencies?: TaskDependency[];
  /** The tenant, user or repository the task is for; claims take turns across keys. */
  concurrencyKey: string | null;
  /** Resources (files, directories ending in /) locked for the task while it is leased; it is handed out only when all are free. */
  locks: string[];
}

/**
 * A task as a write that finishes or renews a lease answers it (a completion, a failure, an
 * extension, a release, a lease's end): every field but its payload. None needs the payload again,
 * and a long one (a prompt) would be read back whole for nothing: from task_payloads on SQLite,
 * de-TOASTed and sent on PostgreSQL; an extension comes every half lease.
 */
export type TaskWithoutPayload = Omit<Task, 'payloadJson'>;

/** What a waiting task does when a dependency ends dead or cancelled: it is cancelled too, or runs anyway. */
export type OnDependencyFailure = 'cancel' | 'run';

/** One dependency of a task as its agent sees it: pending while unfinished, then its outcome. */
export interface TaskDependency {
  id: number;
  status: 'pending' | 'completed' | 'dead' | 'cancelled';
  result: unknown;
  error: unknown;
}

/** A task as events carry it: without payload, result and dependencies, which can be large and are fetched on demand. */
export type TaskSummary = Omit<Task, 'payloadJson' | 'result' | 'dependencies'>;

/** A task without its payload, result and dependencies; field by field, as a rest copy costs ten times as much and this runs for every event of every task. */
export function summarizeTask(t: TaskSummary): TaskSummary {
  return {
    id: t.id,
    namespace: t.namespace,
    type: t.type,
    priority: t.priority,
    requires: t.requires,
    status: t.status,
    idempotencyKey: t.idempotencyKey,
    attempts: t.attempts,
    maxAttempts: t.maxAttempts,
    leaseMs: t.leaseMs,
    backoffMs: t.backoffMs,
    runAt: t.runAt,
    createdAt: t.createdAt,
    updatedAt: t.updatedAt,
    claimedAt: t.claimedAt,
    completedAt: t.completedAt,
    agentId: t.agentId,
    leaseExpiresAt: t.leaseExpiresAt,
    error: t.error,
    executionTimeoutMs: t.executionTimeoutMs,
    scheduleTimeoutMs: t.scheduleTimeoutMs,
    tags: t.tags,
    metadata: t.metadata,
    parentId: t.parentId,
    dependencyCount: t.dependencyCount,
    dependenciesPending: t.dependenciesPending,
    concurrencyKey: t.concurrencyKey,
    locks: t.locks,
  };
}

/** online: heartbeating; stale: missed heartbeats but inside the grace; offline: its leases and locks were released. */
export type AgentStatus = 'online' | 'stale' | 'offline';
export const AGENT_STATUSES: readonly AgentStatus[] = ['online', 'stale', 'offline'];

/** What an API key may do: read (GET and the event stream) < submit (tasks, pipelines, agents) < admin (everything). */
export type Scope = 'read' | 'submit' | 'admin';
export const SCOPES: readonly Scope[] = ['read', 'submit', 'admin'];

export interface ApiKey {
  id: string;
  name: string;
  scope: Scope;
  /** The namespaces it reaches; `*` reaches all of them. */
  namespaces: string[];
  createdAt: number;
  revokedAt: number | null;
  /** When the key stops working; null: never. */
  expiresAt: number | null;
  /** When its secret was last replaced (POST /v1/keys/:id/rotate); null: never. */
  rotatedAt: number | null;
  /** Until when the secret it had before its last rotation still works; null: no previous secret. */
  previousSecretExpiresAt: number | null;
}

export interface Agent {
  id: string;
  /** The namespace it registered in: it claims and sees that namespace's tasks only. */
  namespace: string;
  name: string;
  capabilities: string[];
  labels: Record<string, string>;
  maxConcurrency: number;
  status: AgentStatus;
  createdAt: number;
  lastHeartbeatAt: number;
}

export interface Lock {
  id: string;
  /** Locks clash only within one namespace: two namespaces may hold the same resource at once. */
  namespace: string;
  agentId: string;
  resources: string[];
  description: string;
  createdAt: number;
  expiresAt: number;
}

export interface Page<T> {
  items: T[];
  /** Opaque cursor for the next page; null on the last page. */
  nextCursor: string | null;
}

/** A count of tasks in one (type, priority, status) group, kept up to date on every write. */
export interface TaskCount {
  /** Only when counts are asked by namespace. */
  namespace?: string;
  type: string;
  priority: number;
  status: TaskStatus;
  count: number;
}

export interface AgentCount {
  status: AgentStatus;
  count: number;
}
