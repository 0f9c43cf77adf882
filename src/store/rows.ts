import { createHash } from 'node:crypto';
import type { ApiKey, Lock, Page, Scope, Task, TaskStatus } from '../domain/types.js';
import { encodeCursor } from './cursor.js';
import { requirementKey, requirementsOf } from '../domain/requirements.js';
import type { TaskInsertParams } from './store.js';

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

/** What an idempotency key is bound to: a second submit with the key must describe the same task. */
export function requestHash(t: TaskInsertParams): string {
  return createHash('sha256')
    .update(JSON.stringify([t.type, t.payload, t.priority, requirementKey(t.requires)]))
    .digest('base64url');
}

export function page<R, T>(rows: R[], limit: number, map: (row: R) => T, key: (row: R) => number): Page<T> {
  const more = rows.length > limit;
  const items = more ? rows.slice(0, limit) : rows;
  return { items: items.map(map), nextCursor: more ? encodeCursor(key(items[items.length - 1])) : null };
}
