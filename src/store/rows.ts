import type { Agent, AgentStatus, ApiKey, Lock, Scope, Task, TaskStatus } from '../domain/types.js';
import { requirementsOf } from '../domain/requirements.js';
import type { LeaseEnd } from './store.js';

/** Rows of the tables both SQL drivers share column for column, and their mapping to the domain. */

export interface TaskRow {
  id: number;
  type: string;
  req_key: string;
  payload: string;
  priority: number;
  status: TaskStatus;
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
  completed_at: number | null;
  agent_id: string | null;
  lease_expires_at: number | null;
  result: string | null;
  error: string | null;
  /** '' for a task without a concurrency key. */
  concurrency_key: string;
  /** JSON array of the resources the task locks while leased. */
  locks: string;
}

export interface AgentRow {
  seq: number;
  id: string;
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
  created_at: number;
  revoked_at: number | null;
}

export const toApiKey = (row: ApiKeyRow): ApiKey => ({
  id: row.id,
  name: row.name,
  scope: row.scope,
  createdAt: row.created_at,
  revokedAt: row.revoked_at,
});

export const parseJson = (text: string | null): unknown => (text === null ? null : JSON.parse(text));

export function toTask(row: TaskRow): Task {
  return {
    id: row.id,
    type: row.type,
    payload: JSON.parse(row.payload),
    priority: row.priority,
    requires: [...requirementsOf(row.req_key)],
    status: row.status,
    idempotencyKey: row.idempotency_key,
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
    result: parseJson(row.result),
    error: parseJson(row.error),
    concurrencyKey: row.concurrency_key === '' ? null : row.concurrency_key,
    locks: row.locks === undefined ? [] : JSON.parse(row.locks),
  };
}

export function toLock(row: LockRow): Lock {
  return {
    id: row.id,
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
export const endingLease = (row: TaskRow) => ({
  id: row.id,
  agentId: row.agent_id!,
  attempts: row.attempts,
  maxAttempts: row.max_attempts,
  backoffMs: row.backoff_ms,
});
