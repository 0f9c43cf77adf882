/**
 * The wire contract: the JSON shape of everything fleetd answers and streams, as TypeBox schemas,
 * and the one mapping from the domain's types to it. Inside fleetd times are epoch milliseconds; on
 * the wire they are ISO 8601 strings, on the REST API and on every event stream alike.
 *
 * The schemas are the single source: the server serialises its answers with them, the protocol's
 * types are their `Static` types, and the SDK and the dashboard take their types from here. TypeBox
 * is the one library this leaf imports: the schemas are data, and the mapping's return types must be
 * the schemas' own types, so both live here, below everything that uses them.
 */
import { Type, type Static, type TLiteral, type TSchema, type TUnion } from '@sinclair/typebox';
import { ErrorCodes, type ErrorCode } from './errors.js';
import { RUN_STATUSES, STEP_STATUSES, type Case, type CaseMember, type PipelineRun, type PipelineVersion } from './runs.js';
import { LOG_LEVELS, type ActivityEntry, type ActivityTail } from './activity.js';
import { SCHEDULE_CATCH_UPS, SCHEDULE_OVERLAPS, type Schedule } from './schedules.js';
import { AUDIT_ACTIONS, type AuditEntry } from './audit.js';
import type { Namespace } from './namespaces.js';
import { HOLD_REASONS, type TypePause, type TypePolicy } from './type-policies.js';
import {
  AGENT_STATUSES,
  SCOPES,
  TASK_STATUSES,
  type Agent,
  type ApiKey,
  type Lock,
  type Page,
  type Task,
  type TaskSummary,
  type TaskWithoutPayload,
} from './types.js';

/**
 * A string that is one of `values`, typed as their union. A plain string with an enum rather than a
 * union of literals: the serialiser writes it as a string, instead of trying each literal in turn.
 */
const oneOf = <T extends string>(values: readonly T[]) => Type.Unsafe<T>(Type.String({ enum: [...values] }));
/**
 * The same values as a union of literals, for request schemas, whose static types the server's type
 * provider reads structurally (it does not know `Unsafe`).
 */
export const literalsOf = <T extends string>(values: readonly T[]) =>
  Type.Union(values.map((v) => Type.Literal(v))) as unknown as TUnion<TLiteral<T>[]>;
/** A count for each of `keys`, every one present. */
const countsBy = <T extends string>(keys: readonly T[]) =>
  Type.Unsafe<Record<T, number>>(Type.Object(Object.fromEntries(keys.map((k) => [k, Type.Integer()]))));
/** A count for some of `keys`: those with none are left out. */
const someCountsBy = <T extends string>(keys: readonly T[]) =>
  Type.Unsafe<Partial<Record<T, number>>>(Type.Partial(Type.Object(Object.fromEntries(keys.map((k) => [k, Type.Integer()])))));

const Time = Type.String({ format: 'date-time' });
const NullableTime = Type.Union([Time, Type.Null()]);
const NullableString = Type.Union([Type.String(), Type.Null()]);

export const TaskStatusSchema = oneOf(TASK_STATUSES);
export const AgentStatusSchema = oneOf(AGENT_STATUSES);
export const RunStatusSchema = oneOf(RUN_STATUSES);
export const StepStatusSchema = oneOf(STEP_STATUSES);
export const ScopeSchema = oneOf(SCOPES);
export const ErrorCodeSchema = oneOf(Object.keys(ErrorCodes) as ErrorCode[]);

/**
 * A row's id (a task's, a run's) or a sequence number as a request names it: JavaScript holds every
 * integer up to 2^53 − 1 exactly, and PostgreSQL refuses a bigint past 2^63, so a larger one is
 * refused as bad input rather than rounded to another row's id or failing in the database.
 */
export const RowIdSchema = Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER });
export const SequenceSchema = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER });

/** Every error, on HTTP and on the streams: `{"error": {code, message, details}}`. */
export const ErrorSchema = Type.Object({
  code: ErrorCodeSchema,
  message: Type.String(),
  details: Type.Record(Type.String(), Type.Unknown()),
});
export type ErrorJson = Static<typeof ErrorSchema>;
export const ErrorBody = Type.Object({ error: ErrorSchema });

/** One page of a list; `nextCursor` is null on the last page. */
export const pageOf = <T extends TSchema>(item: T) => Type.Object({ items: Type.Array(item), nextCursor: NullableString });

export const TaskDependencySchema = Type.Object({
  id: Type.Integer(),
  status: oneOf(['pending', 'completed', 'dead', 'cancelled'] as const),
  result: Type.Unknown(),
  error: Type.Unknown(),
});
export type TaskDependencyJson = Static<typeof TaskDependencySchema>;

export const TaskSchema = Type.Object({
  id: Type.Integer(),
  namespace: Type.String(),
  type: Type.String(),
  payload: Type.Unknown(),
  priority: Type.Integer(),
  requires: Type.Array(Type.String()),
  status: TaskStatusSchema,
  idempotencyKey: NullableString,
  attempts: Type.Integer(),
  maxAttempts: Type.Integer(),
  leaseMs: Type.Integer(),
  backoffMs: Type.Integer(),
  runAt: Time,
  createdAt: Time,
  updatedAt: Time,
  claimedAt: NullableTime,
  completedAt: NullableTime,
  agentId: NullableString,
  leaseExpiresAt: NullableTime,
  result: Type.Unknown(),
  error: Type.Unknown(),
  /** While fleetd traces (OpenTelemetry) and the task is leased: the W3C traceparent of its current attempt, for the agent's own spans. */
  traceparent: Type.Optional(Type.String()),
  /** The longest one attempt may run from its claim, extensions included (null: no limit). */
  executionTimeoutMs: Type.Union([Type.Integer(), Type.Null()]),
  /** Dead with FLEETD_ERR_EXPIRED when nobody claims it within this long of runAt (null: never). */
  scheduleTimeoutMs: Type.Union([Type.Integer(), Type.Null()]),
  tags: Type.Array(Type.String()),
  metadata: Type.Record(Type.String(), Type.Unknown()),
  /** The task that spawned this one (submitted with parentId). */
  parentId: Type.Union([Type.Integer(), Type.Null()]),
  /** How many tasks it depends on, and how many of those have not finished. */
  dependencyCount: Type.Integer(),
  dependenciesPending: Type.Integer(),
  /** Its dependencies with their outcomes (result when completed, error when dead or cancelled): on a claimed task and GET /v1/tasks/:id. */
  dependencies: Type.Optional(Type.Array(TaskDependencySchema)),
  /** The tenant, user or repository the task is for; claims take turns across keys. */
  concurrencyKey: NullableString,
  /** Resources locked for the task while it is leased (a name ending in / is a directory). */
  locks: Type.Array(Type.String()),
});
export type TaskJson = Static<typeof TaskSchema>;

/** A task as events carry it: without payload, result and dependencies, which can be large and are fetched on demand. */
export const TaskSummarySchema = Type.Omit(TaskSchema, ['payload', 'result', 'dependencies']);
export type TaskSummaryJson = Static<typeof TaskSummarySchema>;

export const AgentSchema = Type.Object({
  id: Type.String(),
  namespace: Type.String(),
  name: Type.String(),
  capabilities: Type.Array(Type.String()),
  labels: Type.Record(Type.String(), Type.String()),
  maxConcurrency: Type.Integer(),
  status: AgentStatusSchema,
  createdAt: Time,
  lastHeartbeatAt: Time,
});
export type AgentJson = Static<typeof AgentSchema>;

export const LockSchema = Type.Object({
  id: Type.String(),
  namespace: Type.String(),
  agentId: Type.String(),
  resources: Type.Array(Type.String()),
  description: Type.String(),
  createdAt: Time,
  expiresAt: Time,
});
export type LockJson = Static<typeof LockSchema>;

export const KeySchema = Type.Object({
  id: Type.String(),
  name: Type.String(),
  scope: ScopeSchema,
  /** The namespaces it reaches; ["*"]: every one. */
  namespaces: Type.Array(Type.String()),
  createdAt: Time,
  revokedAt: NullableTime,
  /** When the key stops working; null: never. */
  expiresAt: NullableTime,
  /** When its secret was last replaced by a rotation; null: never. */
  rotatedAt: NullableTime,
  /** Until when the secret it had before its last rotation still works; null: there is none. */
  previousSecretExpiresAt: NullableTime,
});
export type KeyJson = Static<typeof KeySchema>;

const Quota = Type.Union([Type.Integer({ minimum: 0 }), Type.Null()]);
export const NamespaceQuotasSchema = Type.Object({
  /** Tasks waiting to run (waiting, scheduled, queued) at once; null: no limit. */
  maxQueuedTasks: Quota,
  /** Tasks submitted per second; null: no limit. */
  maxTasksPerSecond: Quota,
  /** Agents not offline at once; null: no limit. */
  maxAgents: Quota,
});

export const NamespaceSchema = Type.Object({
  name: Type.String(),
  quotas: NamespaceQuotasSchema,
  createdAt: Time,
  updatedAt: Time,
});
export type NamespaceJson = Static<typeof NamespaceSchema>;

export const StepSchema = Type.Object({
  name: Type.String(),
  status: StepStatusSchema,
  attempts: Type.Integer(),
  output: Type.Unknown(),
  error: Type.Unknown(),
  startedAt: NullableTime,
  finishedAt: NullableTime,
  nextAttemptAt: NullableTime,
  /** An approval step, from when it starts waiting: what it asks, until when, and who may decide (null: any submit key). */
  approval: Type.Union([
    Type.Object({
      prompt: Type.String(),
      decideBy: Time,
      onTimeout: Type.Union([Type.Literal('approve'), Type.Literal('reject')]),
      approvers: Type.Union([
        Type.Object({ keys: Type.Optional(Type.Array(Type.String())), agents: Type.Optional(Type.Array(Type.String())) }),
        Type.Null(),
      ]),
    }),
    Type.Null(),
  ]),
});
export type StepJson = Static<typeof StepSchema>;

export const RunSchema = Type.Object({
  id: Type.Integer(),
  /** Where it was started: its cases, approvals and agent steps' tasks are of this namespace too. */
  namespace: Type.String(),
  pipeline: Type.String(),
  status: RunStatusSchema,
  input: Type.Unknown(),
  output: Type.Unknown(),
  error: Type.Unknown(),
  idempotencyKey: NullableString,
  createdAt: Time,
  updatedAt: Time,
  finishedAt: NullableTime,
  steps: Type.Array(StepSchema),
  /** The version of an API-defined pipeline the run started with and keeps; null for a pipeline of the file. */
  pipelineVersion: Type.Union([Type.Integer(), Type.Null()]),
});
export type RunJson = Static<typeof RunSchema>;

/** A run as events carry it: without input and outputs, which can be large and are fetched on demand. */
export const RunSummarySchema = Type.Pick(RunSchema, ['id', 'namespace', 'pipeline', 'status']);
export type RunSummaryJson = Static<typeof RunSummarySchema>;

/** A pipeline as `GET /v1/pipelines` lists it. */
export const PipelineInfoSchema = Type.Object({
  name: Type.String(),
  description: Type.String(),
  steps: Type.Array(Type.Object({ name: Type.String(), kind: Type.String(), needs: Type.Array(Type.String()) })),
  /** `file`: the pipelines file (or code) of the node; `api`: defined over the API, in versions. */
  source: Type.Union([Type.Literal('file'), Type.Literal('api')]),
  /** The namespace an API pipeline was defined in; null for the file's, which every namespace has. */
  namespace: NullableString,
  /** The version new runs start with (API pipelines); null for the file's. */
  version: Type.Union([Type.Integer(), Type.Null()]),
});
export type PipelineInfoJson = Static<typeof PipelineInfoSchema>;

/** One version of a pipeline defined over the API, as given; `definition` null records a deletion. */
export const PipelineVersionSchema = Type.Object({
  /** The namespace it was defined in: each namespace numbers its own versions of a name. */
  namespace: Type.String(),
  version: Type.Integer(),
  definition: Type.Unknown(),
  deleted: Type.Boolean(),
  createdAt: Time,
});
export type PipelineVersionJson = Static<typeof PipelineVersionSchema>;

/** `GET /v1/pipelines/stats`: the pipeline lane's load and each provider's. */
export const PipelineStatsSchema = Type.Object({
  lane: Type.Object({ runsActive: Type.Integer(), stepsRunning: Type.Integer(), stepsWaitingForLane: Type.Integer() }),
  providers: Type.Array(
    Type.Object({
      name: Type.String(),
      inFlight: Type.Integer(),
      waiting: Type.Integer(),
      requestsLastMinute: Type.Number(),
      tokensLastMinute: Type.Number(),
      /** closed, open or half-open. */
      circuit: Type.String(),
      calls: Type.Integer(),
      failures: Type.Integer(),
    }),
  ),
});
export type PipelineStatsJson = Static<typeof PipelineStatsSchema>;

export const CaseSchema = Type.Object({
  id: Type.Integer(),
  /** That of the run that opened it; only runs of this namespace join it. */
  namespace: Type.String(),
  title: Type.String(),
  size: Type.Integer(),
  createdAt: Time,
  updatedAt: Time,
});
export type CaseJson = Static<typeof CaseSchema>;

export const CaseMemberSchema = Type.Object({
  runId: Type.Integer(),
  similarity: Type.Number(),
  text: Type.String(),
  addedAt: Time,
});
export type CaseMemberJson = Static<typeof CaseMemberSchema>;

/** A recurring schedule, with its next fire times (none while paused). */
export const ScheduleSchema = Type.Object({
  namespace: Type.String(),
  name: Type.String(),
  cron: Type.String(),
  timezone: Type.String(),
  task: Type.Record(Type.String(), Type.Unknown()),
  overlap: oneOf(SCHEDULE_OVERLAPS),
  catchUp: oneOf(SCHEDULE_CATCH_UPS),
  paused: Type.Boolean(),
  nextFires: Type.Array(Time),
  lastFireAt: NullableTime,
  lastTaskId: Type.Union([Type.Integer(), Type.Null()]),
  createdAt: Time,
  updatedAt: Time,
});
export type ScheduleJson = Static<typeof ScheduleSchema>;

/** What an agent reports a task used, with its completion or failure (HTTP, the agent stream, batches): no negative numbers. */
export const UsageInputSchema = Type.Object(
  {
    inputTokens: Type.Optional(Type.Integer({ minimum: 0, maximum: 1_000_000_000 })),
    outputTokens: Type.Optional(Type.Integer({ minimum: 0, maximum: 1_000_000_000 })),
    costUsd: Type.Optional(Type.Number({ minimum: 0, maximum: 1_000_000 })),
    model: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
  },
  { additionalProperties: false },
);

/** Usage reported with completions and failures, summed over a window. */
export const UsageTotalsSchema = Type.Object({ inputTokens: Type.Integer(), outputTokens: Type.Integer(), costUsd: Type.Number(), reports: Type.Integer() });

/** Usage over the last hour and day, for the keys that spent most. */
const UsageByKeySchema = Type.Array(Type.Object({ key: NullableString, hour: UsageTotalsSchema, day: UsageTotalsSchema }));

/** `GET /v1/stats` and the `stats` topic's events: counters and rates, no times. */
export const StatsSchema = Type.Object({
  tasks: Type.Object({
    byStatus: countsBy(TASK_STATUSES),
    byType: Type.Record(Type.String(), someCountsBy(TASK_STATUSES)),
    /** Queued (claimable) tasks by priority. */
    queueDepthByPriority: Type.Record(Type.String(), Type.Integer()),
  }),
  agents: Type.Object({ byStatus: countsBy(AGENT_STATUSES) }),
  throughput: Type.Object({
    completedPerSecond1m: Type.Number(),
    completedPerSecond5m: Type.Number(),
    failedPerSecond1m: Type.Number(),
    failedPerSecond5m: Type.Number(),
  }),
  /** From claim to completion, over the last 5 minutes. */
  latencyMs: Type.Object({
    count: Type.Integer(),
    p50: Type.Union([Type.Number(), Type.Null()]),
    p95: Type.Union([Type.Number(), Type.Null()]),
    p99: Type.Union([Type.Number(), Type.Null()]),
  }),
  eventLoop: Type.Object({ lagP50Ms: Type.Number(), lagP99Ms: Type.Number(), lagMaxMs: Type.Number() }),
  uptimeSeconds: Type.Integer(),
  /**
   * Tokens and cost agents reported with completions and failures, over the last hour and day: in
   * all, and per type that reported any in the day (its 20 keys that spent most; null is no key).
   */
  usage: Type.Object({
    hour: UsageTotalsSchema,
    day: UsageTotalsSchema,
    types: Type.Array(Type.Object({ type: Type.String(), hour: UsageTotalsSchema, day: UsageTotalsSchema, keys: UsageByKeySchema })),
  }),
});
export type StatsJson = Static<typeof StatsSchema>;

/** A service a node depends on (postgres, redis), as `GET /readyz` reports it. */
export const DependencySchema = Type.Object({
  up: Type.Boolean(),
  /** When it last went down or came back (or the node started). */
  since: Time,
  /** What its connection said when the outage began; null while up. */
  reason: Type.Union([Type.String(), Type.Null()]),
  outages: Type.Integer(),
  reconnects: Type.Integer(),
});
export type DependencyJson = Static<typeof DependencySchema>;

/** `GET /readyz` while the store answers: `degraded` when a dependency (Redis) is down but the node still serves. */
export const ReadinessSchema = Type.Object({
  status: oneOf(['ready', 'degraded'] as const),
  store: Type.String(),
  checks: Type.Record(Type.String(), Type.String(), { description: '"ok", or why that part does not answer' }),
  pool: Type.Optional(Type.Object({ size: Type.Integer(), total: Type.Integer(), idle: Type.Integer(), inUse: Type.Integer(), waiting: Type.Integer() })),
  dependencies: Type.Record(Type.String(), DependencySchema),
});
export type ReadinessJson = Static<typeof ReadinessSchema>;

/**
 * toISOString costs about half a microsecond, and the hot path formats the same few instants again
 * and again (a batch's tasks share their creation, a claim's their lease times; a drain called it
 * some fourteen times a task): the last instant of each of 256 slots is kept, so a repeat is a
 * lookup.
 */
const ISO_SLOTS = 256;
const isoInstants = new Float64Array(ISO_SLOTS).fill(Number.NaN);
const isoStrings: string[] = new Array(ISO_SLOTS).fill('');
export const iso = (ms: number): string => {
  const slot = ms & (ISO_SLOTS - 1);
  if (isoInstants[slot] === ms) return isoStrings[slot];
  const text = new Date(ms).toISOString();
  isoInstants[slot] = ms;
  isoStrings[slot] = text;
  return text;
};
export const isoOrNull = (ms: number | null): string | null => (ms === null ? null : iso(ms));

/**
 * A literal of every field, as summarizeTask is, and taskJson adds result and payload to it. Added
 * to a literal that began with summarizeTask's spread, the two fields cost 7-9 µs a task (a loop of
 * it alone), to this one as little as if they were in it: for every task pushed, claimed or answered.
 */
export function taskSummaryJson(t: TaskSummary): TaskSummaryJson {
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
    runAt: iso(t.runAt),
    createdAt: iso(t.createdAt),
    updatedAt: iso(t.updatedAt),
    claimedAt: isoOrNull(t.claimedAt),
    completedAt: isoOrNull(t.completedAt),
    agentId: t.agentId,
    leaseExpiresAt: isoOrNull(t.leaseExpiresAt),
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

/**
 * Where a leased task's `traceparent` comes from: tracing sets it while it runs (src/tracing);
 * this leaf knows nothing of tracing.
 */
let traceparentOf: (t: TaskWithoutPayload) => string | undefined = () => undefined;

export function setTraceparentSource(source: (t: TaskWithoutPayload) => string | undefined): void {
  traceparentOf = source;
}

/** A task as the API answers it: its payload parsed from the text it is kept as (Task.payloadJson). */
export function taskJson(t: Task): TaskJson {
  const json = taskJsonBesidesPayload(t);
  json.payload = JSON.parse(t.payloadJson);
  return json;
}

/**
 * taskJson's JSON text, built with the payload's stored text spliced in as it is, never parsed or
 * serialized: for what fleetd sends as text (a push, a claim's answer), where a 16 KB prompt cost a
 * parse and a serialization (about 7 and 26 µs) and now costs a copy.
 */
export function taskJsonText(t: Task): string {
  return `{"payload":${t.payloadJson},${JSON.stringify(taskJsonBesidesPayload(t)).slice(1)}`;
}

/** A list of tasks as taskJsonText writes each: `[…]`. */
export const tasksJsonText = (tasks: readonly Task[]): string => `[${tasks.map(taskJsonText).join(',')}]`;

/** A page of tasks as a list route answers it (pageOf(TaskSchema)), each task as taskJsonText writes it. */
export const taskPageText = (page: Page<Task>): string => `{"items":${tasksJsonText(page.items)},"nextCursor":${JSON.stringify(page.nextCursor)}}`;

/** A task without its payload, result and error: what ?return=minimal answers, to a submit or to an agent's write. */
export function minimalTaskJson(t: TaskWithoutPayload): Omit<TaskJson, 'payload' | 'result' | 'error'> {
  const { result: _result, error: _error, ...rest } = taskJsonBesidesPayload(t);
  return rest;
}

/** Every field of taskJson but the payload. */
function taskJsonBesidesPayload(t: TaskWithoutPayload): TaskJson {
  const json = taskSummaryJson(t) as TaskJson;
  json.result = t.result;
  if (t.dependencies !== undefined) json.dependencies = t.dependencies;
  const traceparent = traceparentOf(t);
  if (traceparent) json.traceparent = traceparent;
  return json;
}

export function agentJson(a: Agent): AgentJson {
  return { ...a, createdAt: iso(a.createdAt), lastHeartbeatAt: iso(a.lastHeartbeatAt) };
}

export function lockJson(l: Lock): LockJson {
  return { ...l, createdAt: iso(l.createdAt), expiresAt: iso(l.expiresAt) };
}

export function keyJson(k: ApiKey): KeyJson {
  return {
    ...k,
    createdAt: iso(k.createdAt),
    revokedAt: isoOrNull(k.revokedAt),
    expiresAt: isoOrNull(k.expiresAt),
    rotatedAt: isoOrNull(k.rotatedAt),
    previousSecretExpiresAt: isoOrNull(k.previousSecretExpiresAt),
  };
}

export function namespaceJson(n: Namespace): NamespaceJson {
  return { ...n, quotas: { ...n.quotas }, createdAt: iso(n.createdAt), updatedAt: iso(n.updatedAt) };
}

export function runJson(r: PipelineRun): RunJson {
  return {
    ...r,
    createdAt: iso(r.createdAt),
    updatedAt: iso(r.updatedAt),
    finishedAt: isoOrNull(r.finishedAt),
    steps: r.steps.map((s) => ({
      ...s,
      startedAt: isoOrNull(s.startedAt),
      finishedAt: isoOrNull(s.finishedAt),
      nextAttemptAt: isoOrNull(s.nextAttemptAt),
      approval: s.approval === null ? null : { ...s.approval, decideBy: iso(s.approval.decideBy) },
    })),
  };
}

export function pipelineVersionJson(v: PipelineVersion): PipelineVersionJson {
  return { namespace: v.namespace, version: v.version, definition: v.definition, deleted: v.definition === null, createdAt: iso(v.createdAt) };
}

export function caseJson(c: Case): CaseJson {
  return { ...c, createdAt: iso(c.createdAt), updatedAt: iso(c.updatedAt) };
}

export function caseMemberJson(m: CaseMember): CaseMemberJson {
  return { ...m, addedAt: iso(m.addedAt) };
}

/** One entry of a task's activity: its progress, a log line or a chunk of output, numbered in the task's order. */
export const ProgressEntrySchema = Type.Object({
  seq: Type.Integer(),
  at: Time,
  kind: Type.Literal('progress'),
  progress: Type.Number({ minimum: 0, maximum: 1 }),
  message: NullableString,
});
export const ActivityEntrySchema = Type.Union([
  ProgressEntrySchema,
  Type.Object({ seq: Type.Integer(), at: Time, kind: Type.Literal('log'), level: oneOf(LOG_LEVELS), message: Type.String() }),
  Type.Object({ seq: Type.Integer(), at: Time, kind: Type.Literal('output'), text: Type.String() }),
]);
export type ActivityEntryJson = Static<typeof ActivityEntrySchema>;

/** GET /v1/tasks/:id/logs: the retained tail of a task's activity, with how much was ever reported. */
export const TaskActivitySchema = Type.Object({
  taskId: Type.Integer(),
  status: TaskStatusSchema,
  /** The latest progress, or null when none was reported. */
  progress: Type.Union([ProgressEntrySchema, Type.Null()]),
  /** Entries after `since`, oldest first: log lines, output and progress as they were reported. */
  entries: Type.Array(ActivityEntrySchema),
  /** The last sequence number the task gave out: `since` for the next read. */
  lastSeq: Type.Integer(),
  /** How many log lines and output bytes were ever reported; beyond the retained tail they were dropped. */
  logLines: Type.Integer(),
  outputBytes: Type.Integer(),
  /** More retained entries follow the last one answered: read again with since = its seq. */
  more: Type.Boolean(),
});
export type TaskActivityJson = Static<typeof TaskActivitySchema>;

export function activityEntryJson(e: ActivityEntry): ActivityEntryJson {
  return { ...e, at: iso(e.at) } as ActivityEntryJson;
}

export function taskActivityJson(task: Task, tail: ActivityTail): TaskActivityJson {
  return {
    taskId: task.id,
    status: task.status,
    progress: tail.progress && (activityEntryJson(tail.progress) as TaskActivityJson['progress']),
    entries: tail.entries.map(activityEntryJson),
    lastSeq: tail.totals.seq,
    logLines: tail.totals.logLines,
    outputBytes: tail.totals.outputBytes,
    more: tail.more,
  };
}

export function scheduleJson(s: Schedule & { nextFires: number[] }): ScheduleJson {
  return {
    namespace: s.namespace,
    name: s.name,
    cron: s.cron,
    timezone: s.timezone,
    task: s.task,
    overlap: s.overlap,
    catchUp: s.catchUp,
    paused: s.paused,
    nextFires: s.nextFires.map(iso),
    lastFireAt: isoOrNull(s.lastFireAt),
    lastTaskId: s.lastTaskId,
    createdAt: iso(s.createdAt),
    updatedAt: iso(s.updatedAt),
  };
}

export const AuditActionSchema = oneOf(AUDIT_ACTIONS);

/** One entry of the audit log (GET /v1/audit). */
export const AuditEntrySchema = Type.Object({
  id: Type.Integer(),
  at: Time,
  /** `key:<id>`, `agent:<id>`, `cli` or `anonymous`. */
  actor: Type.String(),
  address: NullableString,
  action: AuditActionSchema,
  /** `<kind>:<id>`, e.g. `task:42`. */
  target: Type.String(),
  details: Type.Record(Type.String(), Type.Unknown()),
});
export type AuditEntryJson = Static<typeof AuditEntrySchema>;

export function auditEntryJson(e: AuditEntry): AuditEntryJson {
  return { ...e, at: iso(e.at) };
}

export const TypePolicySchema = Type.Object({
  maxConcurrency: Type.Union([Type.Integer(), Type.Null()]),
  maxConcurrencyPerKey: Type.Union([Type.Integer(), Type.Null()]),
  rateLimit: Type.Union([Type.Object({ count: Type.Integer(), perMs: Type.Integer(), perKey: Type.Boolean() }), Type.Null()]),
  keyWeights: Type.Record(Type.String(), Type.Number()),
  budget: Type.Union([
    Type.Object({ tokensPerHour: Type.Union([Type.Integer(), Type.Null()]), costPerDay: Type.Union([Type.Number(), Type.Null()]), perKey: Type.Boolean() }),
    Type.Null(),
  ]),
});
export type TypePolicyJson = Static<typeof TypePolicySchema>;

export const TypePauseSchema = Type.Object({
  /** null: the whole type is paused. */
  key: NullableString,
  /** null: until resumed. */
  until: NullableTime,
  reason: NullableString,
  createdAt: Time,
});
export type TypePauseJson = Static<typeof TypePauseSchema>;

/** A task type: its policy, its tasks by status, its pauses, and its queued tasks a limit or a pause holds back, by reason. */
export const TaskTypeSchema = Type.Object({
  /** A type is its namespace's: its policy, pauses and counts are of this namespace only. */
  namespace: Type.String(),
  type: Type.String(),
  policy: Type.Union([TypePolicySchema, Type.Null()]),
  policyUpdatedAt: NullableTime,
  counts: countsBy(TASK_STATUSES),
  /** The whole type is paused (some keys may be paused on their own: see pauses). */
  paused: Type.Boolean(),
  pauses: Type.Array(TypePauseSchema),
  heldBack: countsBy([...HOLD_REASONS, 'total'] as const),
});
export type TaskTypeJson = Static<typeof TaskTypeSchema>;

/** One concurrency key of a type: its queued and leased tasks, and what holds its queued tasks back. */
export const TypeKeySchema = Type.Object({
  key: NullableString,
  queued: Type.Integer(),
  leased: Type.Integer(),
  heldBy: Type.Union([oneOf(HOLD_REASONS), Type.Null()]),
});
export type TypeKeyJson = Static<typeof TypeKeySchema>;

/** A type's usage over the last hour and day, in all and for the keys that spent most (up to 100). */
export const TypeUsageSchema = Type.Object({
  hour: UsageTotalsSchema,
  day: UsageTotalsSchema,
  keys: Type.Array(Type.Object({ key: NullableString, hour: UsageTotalsSchema, day: UsageTotalsSchema })),
});

/** A type in detail: the keys with the most queued tasks (up to 100), and its usage. */
export const TaskTypeDetailSchema = Type.Composite([TaskTypeSchema, Type.Object({ keys: Type.Array(TypeKeySchema), usage: TypeUsageSchema })]);
export type TaskTypeDetailJson = Static<typeof TaskTypeDetailSchema>;

export const typePolicyJson = (p: TypePolicy): TypePolicyJson => ({ ...p, budget: p.budget ?? null });

export const typePauseJson = (p: TypePause): TypePauseJson => ({ key: p.key, until: isoOrNull(p.until), reason: p.reason, createdAt: iso(p.createdAt) });
