/**
 * The agent stream protocol, version 1: JSON text frames on `GET /v1/agents/:id/stream`, each an
 * object with a `type`. Shared by the server's gateway and the SDK so that both speak the same types.
 *
 * Flow control is by credit: the server never has more tasks outstanding on a socket than the agent
 * granted. Each pushed task spends one credit; the agent grants more (`credit`) as it frees slots.
 * Credit belongs to the connection: a new connection starts at zero.
 */
import { Type, type Static } from '@sinclair/typebox';
import type { FleetError } from '../domain/errors.js';
import type { Agent, TaskWithoutPayload, Task } from '../domain/types.js';
import { AgentSchema, ErrorSchema, RowIdSchema, TaskSchema, TaskStatusSchema, UsageInputSchema, agentJson, isoOrNull, literalsOf, tasksJsonText } from '../domain/wire.js';
import { LOG_LEVELS } from '../domain/activity.js';

export const AGENT_PROTOCOL_VERSION = 1;

/** Names a message so that its answer can say which one it answers. */
export const MessageRef = Type.Union([Type.String({ maxLength: 64 }), Type.Integer()]);
const Ref = Type.Optional(MessageRef);
const TaskId = RowIdSchema;
/** What the task used (tokens, cost, model), counted for its type and key: as on POST /v1/tasks/:id/complete and /fail. */
const Usage = Type.Optional(UsageInputSchema);

/** Most items one batch (`POST /v1/tasks/complete` or a `batch` message) carries. */
export const MAX_BATCH_ITEMS = 1_000;

/**
 * One item of a batch: completes, fails or extends one leased task, as the single messages and
 * routes do. Items are answered each on its own; a refused item changes nothing and refuses no other.
 */
export const TaskBatchItemSchema = Type.Union([
  Type.Object({ op: Type.Literal('complete'), id: TaskId, result: Type.Optional(Type.Unknown()), usage: Usage }, { additionalProperties: false }),
  Type.Object(
    { op: Type.Literal('fail'), id: TaskId, error: Type.Optional(Type.Unknown()), retryable: Type.Optional(Type.Boolean()), usage: Usage },
    { additionalProperties: false },
  ),
  Type.Object(
    { op: Type.Literal('extend'), id: TaskId, leaseMs: Type.Optional(Type.Integer({ minimum: 100, maximum: 86_400_000 })) },
    { additionalProperties: false },
  ),
]);
export type TaskBatchItem = Static<typeof TaskBatchItemSchema>;

/** The answer to one item, in the item's place: the task's status after it, or the error that refused it. */
export const TaskBatchResultSchema = Type.Object({
  id: Type.Integer(),
  status: Type.Optional(TaskStatusSchema),
  leaseExpiresAt: Type.Optional(Type.Union([Type.String({ format: 'date-time' }), Type.Null()])),
  error: Type.Optional(ErrorSchema),
});
export type TaskBatchResult = Static<typeof TaskBatchResultSchema>;

/** One item's answer on the wire: as an `ack` says it, or as an `error` does. */
export function taskBatchResultJson(outcome: { id: number; task?: TaskWithoutPayload; error?: FleetError }): TaskBatchResult {
  if (outcome.task) return { id: outcome.id, status: outcome.task.status, leaseExpiresAt: isoOrNull(outcome.task.leaseExpiresAt) };
  return { id: outcome.id, error: outcome.error!.toJSON().error };
}

/** Agent → server. `ref` is echoed in the `ack` or `error` that answers the message. */
export const AgentMessageSchema = Type.Union([
  /** Grants `add` more tasks. */
  Type.Object({ type: Type.Literal('credit'), add: Type.Integer({ minimum: 1, maximum: 10_000 }) }, { additionalProperties: false }),
  Type.Object(
    { type: Type.Literal('complete'), id: TaskId, result: Type.Optional(Type.Unknown()), usage: Usage, ref: Ref },
    { additionalProperties: false },
  ),
  Type.Object(
    {
      type: Type.Literal('fail'),
      id: TaskId,
      error: Type.Optional(Type.Unknown()),
      /** false dead-letters the task at once, whatever attempts it has left. Defaults to true. */
      retryable: Type.Optional(Type.Boolean()),
      usage: Usage,
      ref: Ref,
    },
    { additionalProperties: false },
  ),
  /**
   * Gives a leased task back for later without spending an attempt (its provider answered 429, say),
   * as POST /v1/tasks/:id/release: queued again after delayMs. Answered by an `ack` with its status.
   */
  Type.Object(
    {
      type: Type.Literal('release'),
      id: TaskId,
      delayMs: Type.Integer({ minimum: 0, maximum: 86_400_000 }),
      reason: Type.Optional(Type.String({ maxLength: 1000 })),
      usage: Usage,
      ref: Ref,
    },
    { additionalProperties: false },
  ),
  Type.Object(
    { type: Type.Literal('extend'), id: TaskId, leaseMs: Type.Optional(Type.Integer({ minimum: 100, maximum: 86_400_000 })), ref: Ref },
    { additionalProperties: false },
  ),
  Type.Object({ type: Type.Literal('heartbeat'), ref: Ref }, { additionalProperties: false }),
  /** Completes, fails and extends several tasks at once; answered by one `batch` message. */
  Type.Object(
    { type: Type.Literal('batch'), items: Type.Array(TaskBatchItemSchema, { minItems: 1, maxItems: MAX_BATCH_ITEMS }), ref: Ref },
    { additionalProperties: false },
  ),
  /** Progress of a task the agent holds, 0 to 1 (as POST /v1/tasks/:id/progress). */
  Type.Object(
    { type: Type.Literal('progress'), id: TaskId, progress: Type.Number({ minimum: 0, maximum: 1 }), message: Type.Optional(Type.String()), ref: Ref },
    { additionalProperties: false },
  ),
  /** Log lines of a task the agent holds (as POST /v1/tasks/:id/logs). */
  Type.Object(
    {
      type: Type.Literal('logs'),
      id: TaskId,
      lines: Type.Array(Type.Object({ level: Type.Optional(literalsOf(LOG_LEVELS)), message: Type.String() }, { additionalProperties: false }), {
        minItems: 1,
        maxItems: 1_000,
      }),
      ref: Ref,
    },
    { additionalProperties: false },
  ),
  /** A chunk of output of a task the agent holds (as POST /v1/tasks/:id/output). */
  Type.Object({ type: Type.Literal('output'), id: TaskId, text: Type.String({ minLength: 1 }), ref: Ref }, { additionalProperties: false }),
]);
export type AgentMessage = Static<typeof AgentMessageSchema>;

/** Tasks, agents and errors travel in the REST API's JSON shape: the wire contract's types. */
export type { AgentJson, ErrorJson, TaskJson } from '../domain/wire.js';

/** Server → agent. */
export const ServerMessageSchema = Type.Union([
  /** First message on every connection. `leased`: tasks the agent still holds (a resumed session). */
  Type.Object({ type: Type.Literal('welcome'), protocol: Type.Integer(), agent: AgentSchema, leased: Type.Array(TaskSchema) }),
  Type.Object({ type: Type.Literal('tasks'), tasks: Type.Array(TaskSchema) }),
  /** A complete, fail, release, extend, heartbeat, progress, logs or output succeeded (the last three with the task's lastSeq). */
  Type.Object({
    type: Type.Literal('ack'),
    ref: Ref,
    id: Type.Optional(TaskId),
    status: Type.Optional(TaskStatusSchema),
    leaseExpiresAt: Type.Optional(Type.Union([Type.String({ format: 'date-time' }), Type.Null()])),
    lastSeq: Type.Optional(Type.Integer()),
  }),
  /** A message was refused; nothing changed. Without `ref` when the message could not be read. */
  Type.Object({ type: Type.Literal('error'), ref: Ref, error: ErrorSchema }),
  /** The answer to a `batch`: one result per item, in order. */
  Type.Object({ type: Type.Literal('batch'), ref: Ref, items: Type.Array(TaskBatchResultSchema) }),
  /**
   * Stop working on task `id`: it was cancelled (FLEETD_ERR_CANCELLED) or its attempt ran past its
   * execution timeout (FLEETD_ERR_TIMEOUT). Its lease has ended; a completion will be refused.
   */
  Type.Object({
    type: Type.Literal('cancel'),
    id: TaskId,
    code: Type.Union([Type.Literal('FLEETD_ERR_CANCELLED'), Type.Literal('FLEETD_ERR_TIMEOUT')]),
    reason: Type.String(),
  }),
]);
export type ServerMessage = Static<typeof ServerMessageSchema>;

/**
 * The two frames that hand tasks to an agent, `tasks` and `welcome`, as text: each task as
 * taskJsonText writes it, its payload's stored text spliced in rather than parsed and serialized
 * again. The same messages as ServerMessageSchema's; test/domain.wire.test.ts holds them to it.
 */
export const tasksFrame = (tasks: readonly Task[]): string => `{"type":"tasks","tasks":${tasksJsonText(tasks)}}`;

export const welcomeFrame = (agent: Agent, leased: readonly Task[]): string =>
  `{"type":"welcome","protocol":${AGENT_PROTOCOL_VERSION},"agent":${JSON.stringify(agentJson(agent))},"leased":${tasksJsonText(leased)}}`;

/** Close codes the gateway uses, beyond 1000 (normal) and 1001 (server going away). */
export const CloseCodes = {
  /** The socket's unsent bytes passed wsMaxBufferedBytes: a consumer too slow to keep up. */
  SLOW_CONSUMER: 1008,
  /** A message over the size limit. */
  MESSAGE_TOO_BIG: 1009,
  /** wsMaxConnections sockets are open already; try again later. */
  CONNECTION_LIMIT: 1013,
  /** A service fleetd depends on (PostgreSQL) is down; try again later. */
  UNAVAILABLE: 1013,
  /** The agent was deleted. */
  AGENT_DELETED: 4404,
  /** The same agent opened a newer connection. */
  REPLACED: 4409,
} as const;
