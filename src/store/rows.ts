import { NO_QUOTAS, namespaceVisible, type Namespace, type NamespaceFilter, type NamespaceQuotas } from '../domain/namespaces.js';
import type { Agent, AgentStatus, ApiKey, TaskWithoutPayload, Lock, Scope, Task, TaskCount, TaskDependency, TaskStatus } from '../domain/types.js';
import { DEFAULT_NAMESPACE } from '../domain/namespaces.js';
import { namespaceOfKey, requiresOf } from '../domain/requirements.js';
import type { Schedule } from '../domain/schedules.js';
import { IDEMPOTENCY_KEY_SEPARATOR, type LeaseEnd } from './store.js';

/** Rows of the tables both SQL drivers share column for column, and their mapping to the domain. */

export interface TaskRow {
  id: number;
  namespace: string;
  type: string;
  /** The requirement key, with the namespace's requirement outside default (domain/requirements.ts). */
  req_key: string;
  payload: string;
  priority: number;
  status: TaskStatus;
  /** As storedIdempotencyKey writes it. */
  idempotency_key: string | null;
  request_hash: string | null;
  attempts: number;
  max_attempts: number;
  lease_ms: number;
  backoff_ms: number;
  run_at: number;
  created_at: number;
  updated_at: number;
  claimed_at: number | null;
  /** The claim that leased it last (TaskClaimParams.claimId). */
  claim_id: number | null;
  completed_at: number | null;
  agent_id: string | null;
  lease_expires_at: number | null;
  result: string | null;
  error: string | null;
  /** '' for a task without a concurrency key. */
  concurrency_key: string;
  /** JSON array of the resources the task locks while leased. */
  locks: string;
  execution_timeout_ms: number | null;
  schedule_timeout_ms: number | null;
  /** When an unclaimed task expires (runAt + scheduleTimeoutMs); cleared by its first claim. */
  expires_at: number | null;
  /** JSON: an array of strings, and an object. */
  tags: string;
  metadata: string;
  parent_id: number | null;
  deps_total: number;
  deps_pending: number;
  on_dependency_failure: string | null;
  /** 0/1 on SQLite, a boolean on PostgreSQL: some task depends on this one. */
  has_dependents: number | boolean;
}

/** An edge of task_dependencies: the outcome of `depends_on` is copied in when it finishes. */
export interface DependencyRow {
  task_id: number;
  depends_on: number;
  status: 'completed' | 'dead' | 'cancelled' | null;
  result: string | null;
  error: string | null;
}

export const toDependency = (row: DependencyRow): TaskDependency => ({
  id: Number(row.depends_on),
  status: row.status ?? 'pending',
  result: parseJson(row.result),
  error: parseJson(row.error),
});

/** Dependencies by task, in the order of their ids. */
export function dependenciesByTask(rows: DependencyRow[]): Map<number, TaskDependency[]> {
  const out = new Map<number, TaskDependency[]>();
  for (const row of [...rows].sort((a, b) => Number(a.depends_on) - Number(b.depends_on))) {
    const id = Number(row.task_id);
    let list = out.get(id);
    if (!list) out.set(id, (list = []));
    list.push(toDependency(row));
  }
  return out;
}

export interface AgentRow {
  seq: number;
  id: string;
  namespace: string;
  name: string;
  /** JSON text on SQLite (with an agent_capabilities table to search), a text[] on PostgreSQL. */
  capabilities: string | string[];
  labels: string;
  max_concurrency: number;
  token_hash: string;
  status: AgentStatus;
  created_at: number;
  last_heartbeat_at: number;
}

export interface LockRow {
  seq: number;
  id: string;
  namespace: string;
  agent_id: string;
  resources: string;
  description: string;
  created_at: number;
  expires_at: number;
}

export interface ApiKeyRow {
  id: string;
  name: string;
  scope: Scope;
  hash: string;
  /** JSON text on SQLite, a text[] on PostgreSQL. */
  namespaces: string | string[];
  created_at: number;
  revoked_at: number | null;
  expires_at: number | null;
  rotated_at: number | null;
  previous_hash: string | null;
  previous_expires_at: number | null;
}

export const toApiKey = (row: ApiKeyRow): ApiKey => ({
  id: row.id,
  name: row.name,
  scope: row.scope,
  namespaces: typeof row.namespaces === 'string' ? JSON.parse(row.namespaces) : row.namespaces,
  createdAt: row.created_at,
  revokedAt: row.revoked_at,
  expiresAt: row.expires_at,
  rotatedAt: row.rotated_at,
  previousSecretExpiresAt: row.previous_expires_at,
});

/**
 * An idempotency key as the tasks table stores it. Keys are per namespace, but the column's UNIQUE
 * constraint (a column constraint, which SQLite cannot drop without rebuilding the table) spans all
 * of them: outside default the key is stored behind its namespace and a separator no namespace name
 * holds (and no key may, see IDEMPOTENCY_KEY_SEPARATOR), so that two namespaces' keys never meet and
 * default's stay as they were stored.
 */
export const storedIdempotencyKey = (namespace: string, key: string | null): string | null =>
  key === null || namespace === DEFAULT_NAMESPACE ? key : `${namespace}${IDEMPOTENCY_KEY_SEPARATOR}${key}`;
const ownIdempotencyKey = (namespace: string, stored: string | null): string | null =>
  stored === null || namespace === DEFAULT_NAMESPACE ? stored : stored.slice(namespace.length + 1);

/**
 * Task counts read by requirement key (task_counts knows a namespace by its req_key), as taskCounts
 * answers them: of the namespaces of the filter, by type, priority and status — and by namespace too
 * with `byNamespace`.
 */
export function countsOfNamespaces(rows: (TaskCount & { req_key: string })[], namespaces: NamespaceFilter, byNamespace: boolean): TaskCount[] {
  const counts = new Map<string, TaskCount>();
  for (const row of rows) {
    const namespace = namespaceOfKey(row.req_key);
    if (!namespaceVisible(namespaces, namespace)) continue;
    const group = `${byNamespace ? namespace : ''}\n${row.type}\n${row.priority}\n${row.status}`;
    const count = counts.get(group);
    if (count) count.count += Number(row.count);
    else counts.set(group, { ...(byNamespace ? { namespace } : {}), type: row.type, priority: row.priority, status: row.status, count: Number(row.count) });
  }
  return [...counts.values()];
}

export const parseJson = (text: string | null): unknown => (text === null ? null : JSON.parse(text));

export const toTask = (row: TaskRow): Task => taskOf(row, parseJson(row.result));

/** The text a new task's payload is stored as: the one core checked its size with, else its payload's. */
export const payloadText = (t: { payload: unknown; payloadJson?: string }): string => t.payloadJson ?? JSON.stringify(t.payload);

/** A completion as both drivers take it (see Store.taskComplete). */
type Completion = { result: unknown; resultJson?: string };

/** The text a completion stores: the one it came with, else its result's. */
export const completionText = (completion: Completion): string => completion.resultJson ?? JSON.stringify(completion.result ?? null);

/**
 * The task a completion wrote, without its payload, which the completion does not read back
 * (TASK_COLUMNS_WITHOUT_PAYLOAD): given its result's text, with the result as given rather than parsed
 * back from the row.
 */
export const completedTask = (row: TaskRowWithoutPayload, completion: Completion): TaskWithoutPayload =>
  taskFields(readWithoutPayload(row), completion.resultJson === undefined ? parseJson(row.result) : (completion.result ?? null), undefined);

/** A task read without its payload (TASK_COLUMNS_WITHOUT_PAYLOAD): as a write that finishes or renews a lease answers it. */
export const taskWithoutPayload = (row: TaskRowWithoutPayload): TaskWithoutPayload => taskFields(readWithoutPayload(row), parseJson(row.result), undefined);

/**
 * The row, refused when it came with its payload: a statement answering a TaskWithoutPayload that
 * reads the payload too (`RETURNING *`) would read a long one back for nothing, and the conformance
 * tests, which make each such write, fail on it rather than miss it.
 */
function readWithoutPayload(row: TaskRowWithoutPayload): TaskRowWithoutPayload {
  if ('payload' in row) throw new Error(`task ${row.id} was read with its payload by a write that answers it without`);
  return row;
}

/** A task row but its payload: what a write that finishes or renews a lease answers (TaskWithoutPayload). */
export type TaskRowWithoutPayload = Omit<TaskRow, 'payload'>;

/** Every column of a task row but its payload, for the writes that finish or renew a lease. */
export const TASK_COLUMNS_WITHOUT_PAYLOAD = [
  'id', 'namespace', 'type', 'req_key', 'priority', 'status', 'idempotency_key', 'request_hash', 'attempts', 'max_attempts',
  'lease_ms', 'backoff_ms', 'run_at', 'created_at', 'updated_at', 'claimed_at', 'claim_id', 'completed_at', 'agent_id',
  'lease_expires_at', 'result', 'error', 'concurrency_key', 'locks', 'execution_timeout_ms', 'schedule_timeout_ms', 'expires_at',
  'tags', 'metadata', 'parent_id', 'deps_total', 'deps_pending', 'on_dependency_failure', 'has_dependents',
] as const satisfies readonly (keyof TaskRowWithoutPayload)[];
// Fails to compile while a column of TaskRow but its payload is missing from the list.
const everyColumnButPayload: Exclude<keyof TaskRowWithoutPayload, (typeof TASK_COLUMNS_WITHOUT_PAYLOAD)[number]> extends never ? true : never = true;
void everyColumnButPayload;

/** TASK_COLUMNS_WITHOUT_PAYLOAD as a SELECT or RETURNING list, each prefixed with `table` when given. */
export const columnsWithoutPayload = (table?: string): string => TASK_COLUMNS_WITHOUT_PAYLOAD.map((c) => (table ? `${table}.${c}` : c)).join(', ');

function taskOf(row: TaskRow, result: unknown): Task {
  // '' is no JSON: SQLite's mark of a payload kept in task_payloads, which the read did not fetch
  // (SqliteDatabase.taskRows). Spliced into a frame as it is, it would break every task beside it.
  if (row.payload === '') throw new Error(`task ${row.id} was read without its payload, which task_payloads keeps`);
  return taskFields(row, result, row.payload) as Task;
}

/**
 * One literal for every task read, so that they share one shape; those read without their payload
 * leave it undefined (TaskWithoutPayload).
 */
function taskFields(row: TaskRowWithoutPayload, result: unknown, payloadJson: string | undefined): TaskWithoutPayload {
  const task: TaskWithoutPayload & { payloadJson: string | undefined } = {
    id: row.id,
    namespace: row.namespace,
    type: row.type,
    payloadJson,
    priority: row.priority,
    requires: requiresOf(row.req_key, row.namespace),
    status: row.status,
    idempotencyKey: ownIdempotencyKey(row.namespace, row.idempotency_key),
    attempts: row.attempts,
    maxAttempts: row.max_attempts,
    leaseMs: row.lease_ms,
    backoffMs: row.backoff_ms,
    runAt: row.run_at,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    claimedAt: row.claimed_at,
    completedAt: row.completed_at,
    agentId: row.agent_id,
    leaseExpiresAt: row.lease_expires_at,
    result,
    error: parseJson(row.error),
    executionTimeoutMs: row.execution_timeout_ms,
    scheduleTimeoutMs: row.schedule_timeout_ms,
    tags: JSON.parse(row.tags),
    metadata: JSON.parse(row.metadata),
    parentId: row.parent_id === null || row.parent_id === undefined ? null : Number(row.parent_id),
    dependencyCount: row.deps_total ?? 0,
    dependenciesPending: row.deps_pending ?? 0,
    concurrencyKey: row.concurrency_key === '' ? null : row.concurrency_key,
    locks: row.locks === undefined ? [] : JSON.parse(row.locks),
  };
  return task;
}

export function toLock(row: LockRow): Lock {
  return {
    id: row.id,
    namespace: row.namespace,
    agentId: row.agent_id,
    resources: JSON.parse(row.resources),
    description: row.description,
    createdAt: row.created_at,
    expiresAt: row.expires_at,
  };
}

export function toAgent(row: AgentRow): Agent {
  return {
    id: row.id,
    namespace: row.namespace,
    name: row.name,
    capabilities: typeof row.capabilities === 'string' ? JSON.parse(row.capabilities) : row.capabilities,
    labels: JSON.parse(row.labels),
    maxConcurrency: row.max_concurrency,
    status: row.status,
    createdAt: row.created_at,
    lastHeartbeatAt: row.last_heartbeat_at,
  };
}

/**
 * The columns a lease's end writes, as core decided it: dead (finished now, runAt kept) or back in
 * the queue at runAt. The same in both drivers; `run_at` null keeps the row's own.
 */
export function leaseEndColumns(end: LeaseEnd, now: number): { status: TaskStatus; run_at: number | null; completed_at: number | null; error: string } {
  const error = JSON.stringify(end.error ?? null);
  return end.status === 'dead'
    ? { status: 'dead', run_at: null, completed_at: now, error }
    : { status: end.status, run_at: end.runAt, completed_at: null, error };
}

/** The lease a row holds, as core's EndLease rule sees it. */
export const endingLease = (row: TaskRowWithoutPayload) => ({
  id: row.id,
  agentId: row.agent_id!,
  attempts: row.attempts,
  maxAttempts: row.max_attempts,
  backoffMs: row.backoff_ms,
  claimedAt: row.claimed_at!,
  executionTimeoutMs: row.execution_timeout_ms,
});

export interface ScheduleRow {
  seq: number;
  namespace: string;
  name: string;
  cron: string;
  timezone: string;
  task: string;
  overlap: string;
  catch_up: string;
  paused: number;
  next_fire_at: number;
  last_fire_at: number | null;
  last_task_id: number | null;
  created_at: number;
  updated_at: number;
}

export const toSchedule = (row: ScheduleRow): Schedule => ({
  namespace: row.namespace,
  name: row.name,
  cron: row.cron,
  timezone: row.timezone,
  task: JSON.parse(row.task),
  overlap: row.overlap as Schedule['overlap'],
  catchUp: row.catch_up as Schedule['catchUp'],
  paused: Number(row.paused) === 1,
  nextFireAt: Number(row.next_fire_at),
  lastFireAt: row.last_fire_at === null ? null : Number(row.last_fire_at),
  lastTaskId: row.last_task_id === null ? null : Number(row.last_task_id),
  createdAt: Number(row.created_at),
  updatedAt: Number(row.updated_at),
});

export interface NamespaceRow {
  name: string;
  /** JSON text on SQLite, jsonb on PostgreSQL. */
  quotas: string | Partial<NamespaceQuotas>;
  created_at: number;
  updated_at: number;
}

export const toNamespace = (row: NamespaceRow): Namespace => ({
  name: row.name,
  quotas: { ...NO_QUOTAS, ...(typeof row.quotas === 'string' ? JSON.parse(row.quotas) : row.quotas) },
  createdAt: row.created_at,
  updatedAt: row.updated_at,
});
