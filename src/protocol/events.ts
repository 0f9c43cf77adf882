/**
 * The observer stream on `GET /v1/events`: clients subscribe to topics and receive batches of the
 * events routed to them, never a broadcast of everything.
 */
import { Type, type Static } from '@sinclair/typebox';

/**
 * `tasks`, `task:<id>`, `agents`, `locks`, `queue:<type>` (tasks of that type), `stats`,
 * `pipelines` (every pipeline run's events) or `run:<id>` (one run's).
 */
export const Topic = Type.String({
  maxLength: 210,
  pattern: '^(tasks|agents|locks|stats|pipelines|task:[1-9][0-9]{0,15}|run:[1-9][0-9]{0,15}|queue:[A-Za-z0-9][A-Za-z0-9_.:/-]{0,199})$',
});

export const ObserverMessageSchema = Type.Union([
  Type.Object(
    { type: Type.Literal('subscribe'), topics: Type.Array(Topic, { minItems: 1, maxItems: 100 }) },
    { additionalProperties: false },
  ),
  Type.Object(
    { type: Type.Literal('unsubscribe'), topics: Type.Array(Topic, { minItems: 1, maxItems: 100 }) },
    { additionalProperties: false },
  ),
]);
export type ObserverMessage = Static<typeof ObserverMessageSchema>;

export interface StreamEvent<T = unknown> {
  /** The subscribed topic that delivered it. */
  topic: string;
  /** A FleetEvents name (data is that event's payload, times in epoch ms), or `stats` (data is the /v1/stats snapshot). */
  name: string;
  data: T;
  /** When the server published it, epoch ms. */
  at: number;
}

/** Server → observer. `subscribed` answers subscribe and unsubscribe with the socket's topics. */
export type ObserverServerMessage =
  | { type: 'events'; events: StreamEvent[] }
  | { type: 'subscribed'; topics: string[] }
  | { type: 'error'; error: { code: string; message: string; details: Record<string, unknown> } };
