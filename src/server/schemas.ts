import { Type, type Static, type TSchema } from '@sinclair/typebox';
import type { Agent, Lock, Task } from '../domain/types.js';

/**
 * Request and response schemas. Requests are strict (unknown fields are rejected, never dropped);
 * responses are serialised from these schemas by compiled code.
 */

const Name = Type.String({ minLength: 1, maxLength: 200, pattern: '^[A-Za-z0-9][A-Za-z0-9_.:/-]*$' });
const Capability = Type.String({ minLength: 1, maxLength: 100, pattern: '^[A-Za-z0-9][A-Za-z0-9_.:/-]*$' });
export const Id = Type.String({ minLength: 1, maxLength: 64 });
const AnyJson = Type.Unknown();
const Time = Type.String({ format: 'date-time' });
const NullableTime = Type.Union([Time, Type.Null()]);

export const ErrorBody = Type.Object({
  error: Type.Object({
    code: Type.String(),
    message: Type.String(),
    details: Type.Record(Type.String(), Type.Unknown()),
  }),
});

export const Pagination = {
  limit: Type.Integer({ minimum: 1, maximum: 1000, default: 100 }),
  cursor: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
};

export const TaskStatusSchema = Type.Union(
  ['scheduled', 'queued', 'leased', 'completed', 'dead', 'cancelled'].map((s) => Type.Literal(s)),
);
export const AgentStatusSchema = Type.Union(['online', 'stale', 'offline'].map((s) => Type.Literal(s)));

export const TaskInputSchema = Type.Object(
  {
    type: Name,
    payload: Type.Optional(AnyJson),
    priority: Type.Optional(Type.Integer({ minimum: -1_000_000, maximum: 1_000_000 })),
    requires: Type.Optional(Type.Array(Capability, { maxItems: 32 })),
    idempotencyKey: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })),
    maxAttempts: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })),
    leaseMs: Type.Optional(Type.Integer({ minimum: 100, maximum: 86_400_000 })),
    backoffMs: Type.Optional(Type.Integer({ minimum: 0, maximum: 86_400_000 })),
    runAt: Type.Optional(Time),
    delayMs: Type.Optional(Type.Integer({ minimum: 0, maximum: 31_536_000_000 })),
  },
  { additionalProperties: false },
);
export type TaskInputBody = Static<typeof TaskInputSchema>;

export const TaskSchema = Type.Object({
  id: Type.Integer(),
  type: Type.String(),
  payload: AnyJson,
  priority: Type.Integer(),
  requires: Type.Array(Type.String()),
  status: Type.String(),
  idempotencyKey: Type.Union([Type.String(), Type.Null()]),
  attempts: Type.Integer(),
  maxAttempts: Type.Integer(),
  leaseMs: Type.Integer(),
  backoffMs: Type.Integer(),
  runAt: Time,
  createdAt: Time,
  updatedAt: Time,
  claimedAt: NullableTime,
  completedAt: NullableTime,
  agentId: Type.Union([Type.String(), Type.Null()]),
  leaseExpiresAt: NullableTime,
  result: AnyJson,
  error: AnyJson,
});

export const AgentInputSchema = Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: 200 }),
    capabilities: Type.Optional(Type.Array(Capability, { maxItems: 64 })),
    labels: Type.Optional(
      Type.Record(Type.String({ maxLength: 100 }), Type.String({ maxLength: 256 }), { maxProperties: 64 }),
    ),
    maxConcurrency: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000 })),
  },
  { additionalProperties: false },
);
export type AgentInputBody = Static<typeof AgentInputSchema>;

export const AgentSchema = Type.Object({
  id: Type.String(),
  name: Type.String(),
  capabilities: Type.Array(Type.String()),
  labels: Type.Record(Type.String(), Type.String()),
  maxConcurrency: Type.Integer(),
  status: Type.String(),
  createdAt: Time,
  lastHeartbeatAt: Time,
});

export const LockInputSchema = Type.Object(
  {
    agentId: Id,
    resources: Type.Array(Type.String({ minLength: 1, maxLength: 1024 }), { minItems: 1, maxItems: 256 }),
    ttlMs: Type.Integer({ minimum: 1 }),
    description: Type.Optional(Type.String({ maxLength: 1000 })),
  },
  { additionalProperties: false },
);

export const LockSchema = Type.Object({
  id: Type.String(),
  agentId: Type.String(),
  resources: Type.Array(Type.String()),
  description: Type.String(),
  createdAt: Time,
  expiresAt: Time,
});

export const pageOf = <T extends TSchema>(item: T) =>
  Type.Object({ items: Type.Array(item), nextCursor: Type.Union([Type.String(), Type.Null()]) });

export const iso = (ms: number): string => new Date(ms).toISOString();
export const isoOrNull = (ms: number | null): string | null => (ms === null ? null : iso(ms));

/** The API's view of a task: times as ISO 8601. */
export function taskJson(t: Task) {
  return {
    ...t,
    runAt: iso(t.runAt),
    createdAt: iso(t.createdAt),
    updatedAt: iso(t.updatedAt),
    claimedAt: isoOrNull(t.claimedAt),
    completedAt: isoOrNull(t.completedAt),
    leaseExpiresAt: isoOrNull(t.leaseExpiresAt),
  };
}

export function agentJson(a: Agent) {
  return { ...a, createdAt: iso(a.createdAt), lastHeartbeatAt: iso(a.lastHeartbeatAt) };
}

export function lockJson(l: Lock) {
  return { ...l, createdAt: iso(l.createdAt), expiresAt: iso(l.expiresAt) };
}
