/** The domain's public types: what the store keeps and the API returns. Times are epoch milliseconds. */

/**
 * A task's life: `scheduled` (waits for runAt or a retry backoff) → `queued` (claimable) →
 * `leased` (held by one agent until leaseExpiresAt) → `completed`, or back to `queued`/`scheduled`
 * on failure or lease expiry, or `dead` once maxAttempts are spent. `cancelled` ends it early.
 */
export type TaskStatus = 'scheduled' | 'queued' | 'leased' | 'completed' | 'dead' | 'cancelled';
export const TASK_STATUSES: readonly TaskStatus[] = ['scheduled', 'queued', 'leased', 'completed', 'dead', 'cancelled'];
export const TERMINAL_STATUSES: ReadonlySet<TaskStatus> = new Set(['completed', 'dead', 'cancelled']);

export interface Task {
  id: number;
  type: string;
  payload: unknown;
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
  /** The tenant, user or repository the task is for; claims take turns across keys. */
  concurrencyKey: string | null;
  /** Resources (files, directories ending in /) locked for the task while it is leased; it is handed out only when all are free. */
  locks: string[];
}

/** A task as events carry it: without payload and result, which can be large and are fetched on demand. */
export type TaskSummary = Omit<Task, 'payload' | 'result'>;

export function summarizeTask(task: Task): TaskSummary {
  const { payload: _payload, result: _result, ...summary } = task;
  return summary;
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
  createdAt: number;
  revokedAt: number | null;
}

export interface Agent {
  id: string;
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
  type: string;
  priority: number;
  status: TaskStatus;
  count: number;
}

export interface AgentCount {
  status: AgentStatus;
  count: number;
}
