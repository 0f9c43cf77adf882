/**
 * The observer stream on `GET /v1/events`: clients subscribe to topics and receive batches of the
 * events routed to them, never a broadcast of everything.
 */
import { Type, type Static, type TObject } from '@sinclair/typebox';
import type { EventName, FleetEvents } from '../bus/bus.js';
import type { Agent, Lock, TaskSummary } from '../domain/types.js';
import type { ActivityEntry } from '../domain/activity.js';
import {
  ActivityEntrySchema,
  activityEntryJson,
  AgentSchema,
  LockSchema,
  RunSummarySchema,
  StatsSchema,
  TaskSummarySchema,
  agentJson,
  literalsOf,
  lockJson,
  taskSummaryJson,
  type ErrorJson,
} from '../domain/wire.js';

/**
 * `tasks`, `task:<id>`, `agents`, `locks`, `queue:<type>` (tasks of that type), `stats`,
 * `pipelines` (every pipeline run's events) or `run:<id>` (one run's). A task's activity
 * (`task.activity`: progress, log lines, output) goes to `task:<id>` only.
 */
export const Topic = Type.String({
  maxLength: 210,
  pattern: '^(tasks|agents|locks|stats|pipelines|task:[1-9][0-9]{0,15}|run:[1-9][0-9]{0,15}|queue:[A-Za-z0-9][A-Za-z0-9_.:/-]{0,199})$',
});

export const ObserverMessageSchema = Type.Union([
  Type.Object(
    {
      type: Type.Literal('subscribe'),
      topics: Type.Array(Topic, { minItems: 1, maxItems: 100 }),
      /** Resume: replay the retained events of these topics after this sequence number, then go live. */
      since: Type.Optional(Type.Integer({ minimum: 0 })),
      /** The epoch `since` was numbered in (from `subscribed`); another epoch's numbers mean nothing here. */
      epoch: Type.Optional(Type.String({ maxLength: 64 })),
    },
    { additionalProperties: false },
  ),
  Type.Object(
    { type: Type.Literal('unsubscribe'), topics: Type.Array(Topic, { minItems: 1, maxItems: 100 }) },
    { additionalProperties: false },
  ),
]);
export type ObserverMessage = Static<typeof ObserverMessageSchema>;

const TaskEvent = Type.Object({ task: TaskSummarySchema });
const AgentEvent = Type.Object({ agent: AgentSchema });
const StepEvent = Type.Object({ run: RunSummarySchema, step: Type.String(), attempt: Type.Integer() });

/**
 * The payload of each event the stream carries, by name: the bus's events (see FleetEvents) with
 * their tasks, agents and locks in the REST API's JSON shape, and `stats`, the /v1/stats snapshot.
 * Task events carry the task without payload and result; fetch the task for those.
 */
export const EventDataSchemas = {
  'task.created': TaskEvent,
  'task.claimed': TaskEvent,
  'task.extended': TaskEvent,
  'task.completed': Type.Object({
    task: TaskSummarySchema,
    /** The task's result, unless it is over the server's eventResultMaxBytes. */
    result: Type.Optional(Type.Unknown()),
    /** True when the result was too large to travel with the event: fetch the task for it. */
    resultTruncated: Type.Optional(Type.Boolean()),
  }),
  'task.failed': TaskEvent,
  'task.requeued': Type.Object({ task: TaskSummarySchema, reason: literalsOf(['lease_expired', 'agent_offline', 'released']) }),
  'task.dead': TaskEvent,
  'task.cancelled': TaskEvent,
  'task.retried': TaskEvent,
  'task.deleted': TaskEvent,
  'task.released': TaskEvent,
  'agent.registered': AgentEvent,
  'agent.online': AgentEvent,
  'agent.stale': Type.Object({ agentId: Type.String() }),
  'agent.offline': AgentEvent,
  'agent.deleted': AgentEvent,
  'lock.acquired': Type.Object({ lock: LockSchema }),
  'lock.released': Type.Object({ lock: LockSchema, reason: literalsOf(['released', 'expired', 'agent_offline']) }),
  'pipeline.run.created': Type.Object({ run: RunSummarySchema }),
  'pipeline.step.started': StepEvent,
  'pipeline.step.completed': StepEvent,
  'pipeline.step.failed': Type.Composite([
    StepEvent,
    Type.Object({ willRetry: Type.Boolean(), error: Type.Record(Type.String(), Type.Unknown()) }),
  ]),
  'pipeline.run.finished': Type.Object({ run: RunSummarySchema }),
  'pipeline.step.waiting': StepEvent,
  stats: StatsSchema,
  'task.activity': Type.Object({ taskId: Type.Integer(), namespace: Type.String(), entries: Type.Array(ActivityEntrySchema) }),
} satisfies Record<Exclude<EventName, 'tasks.available' | 'locks.line'> | 'stats', TObject>;

/** The names of the events the stream carries: tasks.available and locks.line are internal wake-ups and go nowhere. */
export type StreamEventName = keyof typeof EventDataSchemas;
export type EventJson<K extends StreamEventName> = Static<(typeof EventDataSchemas)[K]>;

/** One event, discriminated by `name`. */
export type StreamEvent = {
  [K in StreamEventName]: {
    /** The subscribed topic that delivered it. */
    topic: string;
    name: K;
    data: EventJson<K>;
    /** When the server published it, ISO 8601. */
    at: string;
    /**
     * Its number in this node's event stream (its epoch): increasing along every topic, so that a
     * subscription resumes after the last one it saw.
     */
    seq: number;
  };
}[StreamEventName];

/**
 * An event's payload in its wire shape: the task, agent or lock it carries through the one mapping
 * in domain/wire.ts, the rest (names, reasons, run summaries, which hold no times) as it is.
 */
export function eventJson<K extends Exclude<StreamEventName, 'stats'>>(data: FleetEvents[K]): EventJson<K> {
  const { task, agent, lock, entries } = data as { task?: TaskSummary; agent?: Agent; lock?: Lock; entries?: ActivityEntry[] };
  return {
    ...data,
    ...(task && { task: taskSummaryJson(task) }),
    ...(agent && { agent: agentJson(agent) }),
    ...(lock && { lock: lockJson(lock) }),
    ...(entries && { entries: entries.map(activityEntryJson) }),
  } as EventJson<K>;
}

/** Server → observer. `subscribed` answers subscribe and unsubscribe with the socket's topics. */
export type ObserverServerMessage =
  | { type: 'events'; events: StreamEvent[] }
  /** `epoch` names this node's numbering (a restart or another node starts another); `seq` is the last number given out. */
  | { type: 'subscribed'; topics: string[]; epoch: string; seq: number }
  /**
   * A resume could not replay everything after `since`: events from `from` to `to` (inclusive) may
   * have been missed (`window`: they fell out of the retained window), or the numbers were another
   * epoch's (`epoch`: a restart, or another node), or another node's events were lost on their way
   * here (`relay`, sent live to every socket: the node starts a new epoch at that point, so that a
   * later resume across it is told too). Read the current state over REST.
   */
  | { type: 'gap'; reason: 'window' | 'epoch' | 'relay'; from: number; to: number; epoch: string }
  | { type: 'error'; error: ErrorJson };
