import { Type, type Static } from '@sinclair/typebox';
import { NAMESPACE_PATTERN } from '../domain/namespaces.js';
import { RowIdSchema } from '../domain/wire.js';

/**
 * Request schemas, strict: unknown fields are rejected, never dropped. The response schemas, from
 * which compiled code serialises every answer, are the wire contract in domain/wire.ts.
 */

const Name = Type.String({ minLength: 1, maxLength: 200, pattern: '^[A-Za-z0-9][A-Za-z0-9_.:/-]*$' });
const Capability = Type.String({ minLength: 1, maxLength: 100, pattern: '^[A-Za-z0-9][A-Za-z0-9_.:/-]*$' });
export const Tag = Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9][A-Za-z0-9_.:/=-]*$' });
/** A task's requirement: a capability, or `label:<key>=<value>`, which an agent with that label meets. */
const Requirement = Type.Union([Capability, Type.String({ maxLength: 400, pattern: '^label:[^\\n=]{1,100}=[^\\n]{0,256}$' })]);
export const Id = Type.String({ minLength: 1, maxLength: 64 });
/** `:id` of a task, run or case. */
export const RowIdParams = Type.Object({ id: RowIdSchema });
/** The `namespace` a request names, in its body or query (server/namespaces.ts decides what it may name). */
export const NamespaceName = Type.String({ pattern: NAMESPACE_PATTERN, description: 'The namespace to act in; a key reaching one namespace need not name it' });
const AnyJson = Type.Unknown();
const Time = Type.String({ format: 'date-time' });

/** The namespace a request names (see server/namespaces.ts); a key reaching one namespace need not. */
export const Namespace = Type.String({ pattern: NAMESPACE_PATTERN, description: 'The namespace to act in, or to read; by default the one the credential reaches' });

export const Pagination = {
  limit: Type.Integer({ minimum: 1, maximum: 1000, default: 100 }),
  cursor: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
};

export const TaskInputSchema = Type.Object(
  {
    type: Name,
    payload: Type.Optional(AnyJson),
    priority: Type.Optional(Type.Integer({ minimum: -1_000_000, maximum: 1_000_000 })),
    requires: Type.Optional(Type.Array(Requirement, { maxItems: 32 })),
    idempotencyKey: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })),
    maxAttempts: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })),
    leaseMs: Type.Optional(Type.Integer({ minimum: 100, maximum: 86_400_000 })),
    backoffMs: Type.Optional(Type.Integer({ minimum: 0, maximum: 86_400_000 })),
    runAt: Type.Optional(Time),
    delayMs: Type.Optional(Type.Integer({ minimum: 0, maximum: 31_536_000_000 })),
    executionTimeoutMs: Type.Optional(Type.Integer({ minimum: 100, maximum: 31_536_000_000 })),
    scheduleTimeoutMs: Type.Optional(Type.Integer({ minimum: 1, maximum: 31_536_000_000 })),
    /** Pins the task to this agent: no other may claim it. */
    agentId: Type.Optional(Id),
    tags: Type.Optional(Type.Array(Tag, { maxItems: 16 })),
    /** Up to 16 KiB of JSON, kept with the task. */
    metadata: Type.Optional(Type.Record(Type.String({ maxLength: 100 }), AnyJson, { maxProperties: 64 })),
    parentId: Type.Optional(Type.Integer({ ...RowIdSchema, description: 'The task that spawned this one; it must exist' })),
    dependsOn: Type.Optional(
      Type.Array(RowIdSchema, { maxItems: 1000, description: 'Tasks that must finish first; the task waits (status waiting) until they have' }),
    ),
    onDependencyFailure: Type.Optional(
      Type.Union([Type.Literal('cancel'), Type.Literal('run')], { description: 'When a dependency ends dead or cancelled: cancel this task (the default) or run it anyway' }),
    ),
    concurrencyKey: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })),
    locks: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 1024 }), { maxItems: 100 })),
  },
  { additionalProperties: false },
);
export type TaskInputBody = Static<typeof TaskInputSchema>;

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

export const LockInputSchema = Type.Object(
  {
    agentId: Id,
    resources: Type.Array(Type.String({ minLength: 1, maxLength: 1024 }), { minItems: 1, maxItems: 256 }),
    ttlMs: Type.Integer({ minimum: 1 }),
    description: Type.Optional(Type.String({ maxLength: 1000 })),
    waitMs: Type.Optional(Type.Integer({ minimum: 0, maximum: 30_000 })),
    namespace: Type.Optional(Namespace),
  },
  { additionalProperties: false },
);

/** A concurrency key, as a task carries it and a pause names it. */
const ConcurrencyKey = Type.String({ minLength: 1, maxLength: 256 });

/** A type's policy, replaced whole by PUT: a limit left out is no limit. */
export const TypePolicyInputSchema = Type.Object(
  {
    maxConcurrency: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000 })),
    maxConcurrencyPerKey: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000 })),
    rateLimit: Type.Optional(
      Type.Object(
        {
          count: Type.Integer({ minimum: 1, maximum: 1_000_000 }),
          perMs: Type.Integer({ minimum: 10, maximum: 86_400_000 }),
          perKey: Type.Optional(Type.Boolean()),
        },
        { additionalProperties: false },
      ),
    ),
    keyWeights: Type.Optional(Type.Record(ConcurrencyKey, Type.Integer({ minimum: 1, maximum: 1000 }), { maxProperties: 1000 })),
    budget: Type.Optional(
      Type.Object(
        {
          tokensPerHour: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000_000_000 })),
          costPerDay: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 1_000_000_000 })),
          perKey: Type.Optional(Type.Boolean()),
        },
        { additionalProperties: false, minProperties: 1 },
      ),
    ),
  },
  { additionalProperties: false },
);
export type TypePolicyInputBody = Static<typeof TypePolicyInputSchema>;

export const TypePauseInputSchema = Type.Object(
  {
    forMs: Type.Optional(Type.Integer({ minimum: 1, maximum: 31_536_000_000 })),
    key: Type.Optional(ConcurrencyKey),
    reason: Type.Optional(Type.String({ maxLength: 1000 })),
  },
  { additionalProperties: false },
);
export type TypePauseInputBody = Static<typeof TypePauseInputSchema>;

export const TypeResumeInputSchema = Type.Object({ key: Type.Optional(ConcurrencyKey) }, { additionalProperties: false });
export type TypeResumeInputBody = Static<typeof TypeResumeInputSchema>;

/** A task type in a path: the same characters a task's type takes. */
export const TypeName = Name;

/** What an agent reports a task used: declared with the wire contract, since the agent stream carries it too. */
export { UsageInputSchema } from '../domain/wire.js';

/** A schedule's task: what POST /v1/tasks takes, less what each fire decides (when, its key) and links. */
export const ScheduleTaskSchema = Type.Omit(TaskInputSchema, ['runAt', 'delayMs', 'idempotencyKey', 'parentId', 'dependsOn', 'onDependencyFailure'], {
  additionalProperties: false,
});

export const ScheduleInputSchema = Type.Object(
  {
    name: Name,
    cron: Type.String({ minLength: 1, maxLength: 200, description: 'Five fields (minute hour day-of-month month day-of-week), or six with seconds first' }),
    timezone: Type.Optional(Type.String({ minLength: 1, maxLength: 64, description: 'An IANA time zone; UTC by default' })),
    task: ScheduleTaskSchema,
    overlap: Type.Optional(Type.Union([Type.Literal('skip'), Type.Literal('allow')])),
    catchUp: Type.Optional(Type.Union([Type.Literal('none'), Type.Literal('latest'), Type.Literal('all')])),
    namespace: Type.Optional(Namespace),
  },
  { additionalProperties: false },
);
export type ScheduleInputBody = Static<typeof ScheduleInputSchema>;
