import type { Agent, Lock, TaskSummary } from '../domain/types.js';
import type { RunSummary } from '../domain/runs.js';
import type { ActivityEntry } from '../domain/activity.js';

/**
 * Every event fleetd emits, by name. One map feeds logs, metrics, the WebSocket streams and tests.
 * Events are published only after the write they describe is committed.
 */
export interface FleetEvents {
  /** A task was submitted (status queued, or scheduled when runAt is in the future). */
  'task.created': { task: TaskSummary };
  /** An agent leased the task. */
  'task.claimed': { task: TaskSummary };
  'task.extended': { task: TaskSummary };
  /** With the result, unless its JSON is over eventResultMaxBytes: then resultTruncated, and the result is fetched with the task. */
  'task.completed': { task: TaskSummary; result?: unknown; resultTruncated?: boolean };
  /** The agent reported a failure; the task will be retried (it is queued or scheduled again). */
  'task.failed': { task: TaskSummary };
  /** The task went back to the queue without a result: its lease expired or its agent went offline. */
  'task.requeued': { task: TaskSummary; reason: 'lease_expired' | 'agent_offline' | 'released' };
  /** Attempts exhausted, or a non-retryable failure: the task is dead-lettered. */
  'task.dead': { task: TaskSummary };
  'task.cancelled': { task: TaskSummary };
  /** A dead or cancelled task was put back in the queue by hand. */
  'task.retried': { task: TaskSummary };
  /** A finished task was deleted by a bulk action (retention's deletions publish nothing). */
  'task.deleted': { task: TaskSummary };
  /** Its dependencies finished: a waiting task was queued (or scheduled, when its runAt lies ahead). */
  'task.released': { task: TaskSummary };
  /**
   * Claimable tasks appeared, counted by requirement key: what wakes waiting claims. Published by
   * whichever node made them claimable, so that agents waiting on any node wake up.
   */
  'tasks.available': { byRequirement: Record<string, number> };
  'agent.registered': { agent: Agent };
  /** A stale or offline agent came back (heartbeat or claim). */
  'agent.online': { agent: Agent };
  'agent.stale': { agentId: string };
  'agent.offline': { agent: Agent };
  'agent.deleted': { agent: Agent };
  'lock.acquired': { lock: Lock };
  'lock.released': { lock: Lock; reason: 'released' | 'expired' | 'agent_offline' };
  /**
   * A request waiting for locks left the line without them (its wait ran out, its client gave up):
   * requests behind it, on any node, look again. An internal wake-up, like tasks.available; the
   * event stream does not carry it.
   */
  'locks.line': { left: number };
  /** A pipeline run was started (not published for a repeated idempotency key). */
  'pipeline.run.created': { run: RunSummary };
  /** An attempt of a step started (its attempts count includes it). */
  'pipeline.step.started': { run: RunSummary; step: string; attempt: number };
  /** A step's output was recorded; it will not run again for this run. */
  'pipeline.step.completed': { run: RunSummary; step: string; attempt: number };
  /** An attempt of a step failed; it will be retried after its backoff unless willRetry is false. */
  'pipeline.step.failed': { run: RunSummary; step: string; attempt: number; willRetry: boolean; error: Record<string, unknown> };
  /** The run ended: completed, failed or cancelled. */
  'pipeline.run.finished': { run: RunSummary };
  /** An approval step started waiting for a decision (again after a restart); its run shows what it asks. */
  'pipeline.step.waiting': { run: RunSummary; step: string; attempt: number };
  /** The agent holding the task reported progress, log lines or output: the entries as stored, in order. */
  'task.activity': { taskId: number; namespace: string; entries: ActivityEntry[] };
}

export type EventName = keyof FleetEvents;
export type EventHandler<K extends EventName> = (event: FleetEvents[K]) => void;
export type AnyEventHandler = <K extends EventName>(name: K, event: FleetEvents[K]) => void;

/** Carries events between the parts of one node and, with a networked driver, between nodes. */
export interface Bus {
  /**
   * True while handlers run for an event that another node published and this bus relays: what
   * that node did about it once for the whole cluster (e.g. bumping cache versions in Redis) is
   * not to be done again. Absent on a bus that relays nothing.
   */
  readonly relaying?: boolean;
  publish<K extends EventName>(name: K, event: FleetEvents[K]): void;
  /** Returns the function that unsubscribes. */
  subscribe<K extends EventName>(name: K, handler: EventHandler<K>): () => void;
  subscribeAll(handler: AnyEventHandler): () => void;
  /**
   * Where events cross nodes: tells `listener` when another node's events were lost on the way
   * (counted by that node's message numbers), so that whoever numbers events says so rather than
   * skip them in silence. Returns the function that stops telling. Absent on a bus that relays nothing.
   */
  onRelayGap?(listener: (node: string, missedMessages: number) => void): () => void;
  /**
   * Where events cross nodes, some of another node's reach this one only while it asks: the many
   * that a task's life makes (created, claimed, extended, its activity) and completed tasks'
   * results, which only observers watching tasks want (see redis-bus.ts). Until then a relayed
   * task.completed comes as resultTruncated. Resolves once they are heard, with the function that
   * gives the demand back (its promise says when they no longer are, if none else asks). Absent on
   * a bus that relays nothing: there every event is heard.
   */
  hearAll?(): Promise<() => Promise<void>>;
  close(): Promise<void>;
}

/**
 * Subscribes to the events this node published itself, not those another node published and this
 * bus relays: for what each node does once for its own (traces, counters summed over the nodes,
 * events derived from another), which done for a relayed event too would be done twice.
 */
export function subscribeOwn<K extends EventName>(bus: Bus, name: K, handler: EventHandler<K>): () => void {
  return bus.subscribe(name, (event) => {
    if (!bus.relaying) handler(event);
  });
}
