import { randomUUID } from 'node:crypto';
import { SpanKind } from '@opentelemetry/api';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import type { WebSocket } from 'ws';
import { CloseCodes } from '../../protocol/agent-stream.js';
import type { EventName, FleetEvents } from '../../bus/bus.js';
import type { FleetdConfig } from '../../config.js';
import type { Logger } from '../../core/context.js';
import { isDependencyUnavailable } from '../../domain/errors.js';
import type { Fleet } from '../../core/fleet.js';
import type { FleetStats } from '../../core/stats.js';
import { namespaceVisible, type NamespaceFilter } from '../../domain/namespaces.js';
import { FleetError } from '../../domain/errors.js';
import { iso } from '../../domain/wire.js';
import { ObserverMessageSchema, eventJson, type ObserverServerMessage, type StreamEventName } from '../../protocol/events.js';
import { inSpan } from '../../tracing/tracing.js';
import type { Connections } from './connections.js';
import { EventWindow } from './event-window.js';

const checkMessage = TypeCompiler.Compile(ObserverMessageSchema);
const MAX_TOPICS_PER_SOCKET = 1_000;
/**
 * Whether a socket is sent an event about `namespace`: undefined, an event every socket may see;
 * null, one of a namespace the event does not say, for sockets that reach them all only.
 */
const sees = (observer: Observer, namespace: string | null | undefined): boolean =>
  namespace === undefined || (namespace === null ? observer.reach === undefined : namespaceVisible(observer.reach, namespace));

/** An observer only ever sends (un)subscribe messages: anything bigger is not one (the socket-wide cap is the payload size). */
const MAX_OBSERVER_MESSAGE_BYTES = 64 * 1024;
const STATS_INTERVAL_MS = 1_000;
/**
 * A live batch (each second's stats, a few events) goes to every observer at once: deflating it
 * once per socket (permessage-deflate keeps a context per socket) costs more than the bytes it
 * saves, and queues every socket's frame behind the others' in zlib's threads — with 250 observers,
 * seconds behind. A large batch (a burst of events) is still compressed; a replay, sent to one
 * socket, is compressed from 8 KiB (see gateway.ts).
 */
const LIVE_DEFLATE_MIN_BYTES = 16 * 1024;
/**
 * How long a node goes on hearing every other node's task events after its last observer of a task
 * topic left (see Bus.hearAll): a dashboard that reconnects within it resumes from the replay
 * window; later, a resume gets a gap, as the window no longer holds all that happened.
 */
const TASK_EVENTS_LINGER_MS = 60_000;

/** Topics whose events another node relays only on demand. */
const isTaskTopic = (topic: string) => topic === 'tasks' || topic.startsWith('task:') || topic.startsWith('queue:');

class Observer {
  readonly topics = new Set<string>();
  /** The namespaces its credential reaches (undefined: all): it is sent only their events. */
  reach: NamespaceFilter = undefined;
  /** Serialised events waiting for the next batch. */
  pending: string[] = [];
  /** The sequence number of the last event queued, so that an event on two of its topics is sent once. */
  lastSeq = 0;
  /** When its last batch went (Date.now()): an event after a quiet spell goes at once. */
  lastFlushAt = 0;
  constructor(
    readonly socket: WebSocket,
    /** From /v1/events?since=&epoch=: where the socket's first subscribe resumes unless it says. */
    readonly resume?: { since: number; epoch?: string },
  ) {}
  /** Topics the socket's ?since= was replayed for already. */
  readonly resumed = new Set<string>();
  /** Its messages are handled in order, one at a time: a subscribe may wait for the bus (hearTaskEvents). */
  handling: Promise<void> = Promise.resolve();
  closed = false;
}

/** The topics an event is published on; tasks.available and locks.line are internal wake-ups and go nowhere. */
function topicsOf(name: EventName, data: FleetEvents[EventName]): string[] {
  // Many small events a second while an agent streams: only those watching that task want them.
  if (name === 'task.activity') return [`task:${(data as FleetEvents['task.activity']).taskId}`];
  if (name.startsWith('task.')) {
    const { task } = data as FleetEvents['task.created'];
    return ['tasks', `task:${task.id}`, `queue:${task.type}`];
  }
  if (name.startsWith('agent.')) return ['agents'];
  if (name.startsWith('lock.')) return ['locks'];
  if (name.startsWith('pipeline.')) {
    const { run } = data as FleetEvents['pipeline.run.created'];
    return ['pipelines', `run:${run.id}`];
  }
  return [];
}

/**
 * The namespace an event is about (see sees): a task's, an agent's, a lock's or a pipeline run's;
 * null for agent.stale, which names its agent only; undefined for events of no namespace (stats,
 * which are counted per observer, and the node's own).
 */
function namespaceOf(name: EventName, data: FleetEvents[EventName]): string | null | undefined {
  if (name === 'task.activity') return (data as FleetEvents['task.activity']).namespace;
  if (name.startsWith('task.')) return (data as FleetEvents['task.created']).task.namespace;
  if (name === 'agent.stale') return null;
  if (name.startsWith('agent.')) return (data as FleetEvents['agent.registered']).agent.namespace;
  if (name === 'lock.acquired' || name === 'lock.released') return (data as FleetEvents['lock.acquired']).lock.namespace;
  if (name.startsWith('pipeline.')) return (data as FleetEvents['pipeline.run.created']).run.namespace;
  return undefined;
}

/** What an event kept for replay holds on to, about: a task's activity its text, any other event a task or agent's worth. */
function retainedBytes(name: string, data: unknown): number {
  if (name !== 'task.activity') return 1_024;
  let bytes = 256;
  for (const e of (data as FleetEvents['task.activity']).entries) bytes += 128 + 2 * ((e.kind === 'output' ? e.text : (e.message ?? '')).length);
  return bytes;
}

/**
 * The observer side of the gateway: sockets subscribe to topics and get only the events routed to
 * those topics (a map from topic to sockets: publishing costs the interested sockets, not all of
 * them). Events are serialised once per topic and sent in batches: an event that finds the socket
 * quiet for eventBatchMs goes at once, the ones that follow it wait for the rest of the window, or
 * until eventBatchMax are waiting. A trickle (a stats snapshot a second) is never held back by the
 * window; a burst still costs one message per window.
 */
export class EventStream {
  private readonly byTopic = new Map<string, Set<Observer>>();
  private readonly dirty = new Set<Observer>();
  private flushTimer: NodeJS.Timeout | undefined;
  private statsTimer: NodeJS.Timeout | undefined;
  private unsubscribe: () => void = () => {};
  private seq = 0;
  /** This node's numbering of its events: a restart starts another, and so does a relay gap. */
  epoch = randomUUID();
  private stopRelayGaps: () => void = () => {};
  private readonly window: EventWindow;
  /** Sockets' subscriptions to task topics, counted: while there are any (and a while after), every node's task events are heard. */
  private taskTopicSubscriptions = 0;
  /** Gives back the demand for every node's task events (Bus.hearAll); set while it is held. */
  private giveBackTaskEvents: (() => Promise<void>) | undefined;
  private askingForTaskEvents: Promise<void> | undefined;
  private lingering: NodeJS.Timeout | undefined;

  constructor(
    private readonly fleet: Fleet,
    private readonly config: Readonly<FleetdConfig>,
    private readonly connections: Connections,
    private readonly log: Logger,
  ) {
    this.window = new EventWindow(config.eventReplayWindow, config.eventReplayWindowBytes);
  }

  start(): void {
    const bus = this.fleet.bus;
    this.unsubscribe = bus.subscribeAll((name, data) => {
      // Another node's task events while none are asked for: some are not heard, so none would be
      // sent, and a later subscriber to a task topic starts a new epoch (hearTaskEvents).
      if (bus.relaying && bus.hearAll && !this.giveBackTaskEvents && name.startsWith('task.')) return;
      this.publish(
        name as StreamEventName,
        topicsOf(name, data),
        () => eventJson(data as FleetEvents[Exclude<StreamEventName, 'stats'>]),
        undefined,
        data,
        namespaceOf(name, data),
      );
    });
    this.stopRelayGaps = this.fleet.bus.onRelayGap?.(() => this.relayGap()) ?? (() => {});
    this.statsTimer = setInterval(() => void this.publishStats(), STATS_INTERVAL_MS);
    this.statsTimer.unref();
  }

  stop(): void {
    this.unsubscribe();
    this.stopRelayGaps();
    clearInterval(this.statsTimer);
    clearTimeout(this.flushTimer);
    this.giveBackTaskEventsNow();
  }

  /** `reach`: the namespaces the socket's credential reaches (undefined: all), whose events alone it is sent. */
  open(socket: WebSocket, owner: string, resume?: { since: number; epoch?: string }, reach?: NamespaceFilter): void {
    if (!this.connections.admit(socket, owner)) return;
    const observer = new Observer(socket, resume);
    observer.reach = reach;
    socket.on('message', (data, isBinary) => {
      const bytes = Array.isArray(data) ? data.reduce((n, b) => n + b.length, 0) : (data as Buffer | ArrayBuffer).byteLength;
      if (bytes > MAX_OBSERVER_MESSAGE_BYTES) return socket.close(CloseCodes.MESSAGE_TOO_BIG, `observer messages are at most ${MAX_OBSERVER_MESSAGE_BYTES} bytes`);
      const text = isBinary ? undefined : data.toString();
      observer.handling = observer.handling
        .then(() => inSpan('WS events message', { kind: SpanKind.SERVER }, () => this.onMessage(observer, text)))
        .catch((err: unknown) => this.log.error({ err }, 'observer message failed'));
    });
    socket.once('close', () => {
      observer.closed = true;
      for (const topic of observer.topics) this.leave(observer, topic);
      this.dirty.delete(observer);
    });
  }

  private async onMessage(observer: Observer, text: string | undefined): Promise<void> {
    // Closed while an earlier message waited (hearTaskEvents): nothing is joined for it any more.
    if (observer.closed) return;
    let message: unknown;
    try {
      message = text === undefined ? undefined : JSON.parse(text);
    } catch {
      return this.replyError(observer, new FleetError('FLEETD_ERR_MALFORMED_JSON', 'the message is not valid JSON'));
    }
    if (!checkMessage.Check(message)) {
      const first = checkMessage.Errors(message).First();
      const field = `message${(first?.path || '').replaceAll('/', '.')}`;
      return this.replyError(observer, new FleetError('FLEETD_ERR_VALIDATION', `${field}: ${first?.message ?? 'is invalid'}`, { field }));
    }
    if (message.type === 'subscribe') {
      const added = message.topics.filter((t) => !observer.topics.has(t));
      if (observer.topics.size + added.length > MAX_TOPICS_PER_SOCKET) {
        return this.replyError(
          observer,
          new FleetError('FLEETD_ERR_VALIDATION', `a socket holds at most ${MAX_TOPICS_PER_SOCKET} topics`, { field: 'message.topics' }),
        );
      }
      if (added.some(isTaskTopic)) {
        await this.hearTaskEvents();
        if (observer.closed) return this.lingerIfUnused();
      }
      for (const topic of added) this.join(observer, topic);
      // A socket opened with ?since= resumes every topic it subscribes, each once: a page subscribes its topics as its views mount.
      const resume = message.since === undefined ? observer.resume : { since: message.since, epoch: message.epoch };
      const replayed = message.since === undefined ? added.filter((t) => !observer.resumed.has(t)) : message.topics;
      if (message.since === undefined) for (const t of replayed) observer.resumed.add(t);
      this.reply(observer, { type: 'subscribed', topics: [...observer.topics], epoch: this.epoch, seq: this.seq });
      if (resume && replayed.length > 0) this.replay(observer, replayed, resume);
      if (added.includes('stats')) void this.publishStats(observer);
      return;
    }
    for (const topic of message.topics) if (observer.topics.has(topic)) this.leave(observer, topic);
    this.reply(observer, { type: 'subscribed', topics: [...observer.topics], epoch: this.epoch, seq: this.seq });
  }

  /**
   * Sends what the window holds of these topics after `since`, before anything live (publishing is
   * synchronous, so nothing can come between). What it no longer holds, or numbers of another
   * epoch, are reported as a gap: never skipped in silence.
   */
  private replay(observer: Observer, topics: string[], resume: { since: number; epoch?: string }): void {
    if (resume.epoch !== undefined && resume.epoch !== this.epoch) {
      this.reply(observer, { type: 'gap', reason: 'epoch', from: 1, to: this.seq, epoch: this.epoch });
      return;
    }
    const since = Math.min(resume.since, this.seq);
    const { events, oldest } = this.window.after(since, this.seq);
    if (oldest > since + 1) this.reply(observer, { type: 'gap', reason: 'window', from: since + 1, to: oldest - 1, epoch: this.epoch });
    const wanted = new Set(topics);
    this.flush(observer);
    for (const event of events) {
      // The first of its topics asked for: the window holds each event once, so it is sent once.
      const topic = event.topics.find((t) => wanted.has(t));
      if (topic === undefined || !sees(observer, event.namespace)) continue;
      observer.pending.push(JSON.stringify({ topic, name: event.name, data: event.data(), at: event.at, seq: event.seq }));
      if (observer.pending.length >= this.config.eventBatchMax) this.flush(observer, Date.now(), false);
    }
    this.flush(observer, Date.now(), false);
  }

  /**
   * Another node's events were lost on their way here: every socket is told now, and the numbering
   * starts a new epoch, so that a subscription resuming from before this point is told as well.
   */
  private relayGap(): void {
    this.epoch = randomUUID();
    const text = JSON.stringify({ type: 'gap', reason: 'relay', from: this.seq + 1, to: this.seq, epoch: this.epoch } satisfies ObserverServerMessage);
    const told = new Set<Observer>();
    for (const set of this.byTopic.values()) {
      for (const observer of set) {
        if (told.has(observer)) continue;
        told.add(observer);
        this.flush(observer);
        this.connections.send(observer.socket, text);
      }
    }
  }

  private reply(observer: Observer, message: ObserverServerMessage): void {
    this.connections.send(observer.socket, JSON.stringify(message));
  }

  private replyError(observer: Observer, error: FleetError): void {
    this.reply(observer, { type: 'error', error: error.toJSON().error });
  }

  /** With no socket on a task topic, gives back the demand for every node's task events after TASK_EVENTS_LINGER_MS. */
  private lingerIfUnused(): void {
    if (this.taskTopicSubscriptions > 0 || !this.giveBackTaskEvents || this.lingering) return;
    this.lingering = setTimeout(() => this.giveBackTaskEventsNow(), TASK_EVENTS_LINGER_MS);
    this.lingering.unref();
  }

  private giveBackTaskEventsNow(): void {
    clearTimeout(this.lingering);
    this.lingering = undefined;
    void this.giveBackTaskEvents?.();
    this.giveBackTaskEvents = undefined;
  }

  /**
   * Asks the bus for every node's task events, and waits until they are heard. Asked anew (after
   * none were asked for), it starts a new epoch: the window does not hold what was not heard.
   */
  private async hearTaskEvents(): Promise<void> {
    clearTimeout(this.lingering);
    this.lingering = undefined;
    const hearAll = this.fleet.bus.hearAll?.bind(this.fleet.bus);
    if (!hearAll || this.giveBackTaskEvents) return;
    this.askingForTaskEvents ??= hearAll().then((giveBack) => {
      this.askingForTaskEvents = undefined;
      this.giveBackTaskEvents = giveBack;
      this.epoch = randomUUID();
    });
    await this.askingForTaskEvents;
  }

  private join(observer: Observer, topic: string): void {
    if (observer.topics.has(topic)) return;
    if (isTaskTopic(topic)) this.taskTopicSubscriptions++;
    observer.topics.add(topic);
    let set = this.byTopic.get(topic);
    if (!set) this.byTopic.set(topic, (set = new Set()));
    set.add(observer);
  }

  private leave(observer: Observer, topic: string): void {
    if (!observer.topics.delete(topic)) return;
    if (isTaskTopic(topic)) {
      this.taskTopicSubscriptions--;
      this.lingerIfUnused();
    }
    const set = this.byTopic.get(topic);
    set?.delete(observer);
    if (set?.size === 0) this.byTopic.delete(topic);
  }

  /**
   * Queues the event for every socket on any of its topics, once per socket. `data` gives the
   * payload in its wire shape, asked for once and only if some socket is to get it.
   */
  private publish(name: StreamEventName, topics: string[], data: () => unknown, only?: Observer, raw?: unknown, namespace?: string | null): void {
    const seq = ++this.seq;
    const now = Date.now();
    const at = iso(now);
    let payload: unknown;
    // Snapshots sent to one socket, and stats, which the next second replaces, are not worth replaying.
    if (!only && name !== 'stats' && topics.length > 0) {
      this.window.push({ seq, name, topics, at, data: () => (payload ??= data()), bytes: retainedBytes(name, raw), namespace });
    }
    for (const topic of topics) {
      const set = only ? (only.topics.has(topic) ? [only] : []) : this.byTopic.get(topic);
      if (!set) continue;
      let entry: string | undefined;
      for (const observer of set) {
        if (observer.lastSeq === seq || !sees(observer, namespace)) continue;
        observer.lastSeq = seq;
        payload ??= data();
        entry ??= JSON.stringify({ topic, name, data: payload, at, seq });
        observer.pending.push(entry);
        if (observer.pending.length >= this.config.eventBatchMax || now - observer.lastFlushAt >= this.config.eventBatchMs) this.flush(observer, now);
        else this.dirty.add(observer);
      }
    }
    if (this.dirty.size > 0 && !this.flushTimer) {
      this.flushTimer = setTimeout(() => this.flushAll(), this.config.eventBatchMs);
    }
  }

  private async publishStats(only?: Observer): Promise<void> {
    const subscribers = only ? [only] : this.byTopic.get('stats');
    if (!subscribers) return;
    try {
      const snapshot = await this.fleet.stats.snapshot();
      if ([...subscribers].every((o) => o.reach === undefined)) {
        this.publish('stats', ['stats'], () => snapshot, only);
        return;
      }
      // A socket that does not reach every namespace is sent the counts and usage of its own (read once per reach).
      const ofReach = new Map<string, Promise<Pick<FleetStats, 'tasks' | 'agents' | 'usage'>>>();
      for (const observer of [...subscribers]) {
        const reach = observer.reach;
        let own: Pick<FleetStats, 'tasks' | 'agents' | 'usage'> | undefined;
        if (reach !== undefined) {
          const key = reach.join(',');
          if (!ofReach.has(key)) {
            ofReach.set(key, Promise.all([this.fleet.stats.counts(reach), this.fleet.stats.usage(reach)]).then(([counts, usage]) => ({ ...counts, usage })));
          }
          own = await ofReach.get(key);
        }
        this.publish('stats', ['stats'], () => (own ? { ...snapshot, ...own } : snapshot), observer);
      }
    } catch (err) {
      if (!isDependencyUnavailable(err)) this.log.error({ err }, 'stats for observers failed');
    }
  }

  private flushAll(): void {
    this.flushTimer = undefined;
    const now = Date.now();
    for (const observer of this.dirty) this.flush(observer, now);
  }

  /** Sends the observer's pending events as one batch; `live` for a batch of the live stream (see LIVE_DEFLATE_MIN_BYTES). */
  private flush(observer: Observer, now = Date.now(), live = true): void {
    this.dirty.delete(observer);
    if (observer.pending.length === 0) return;
    observer.lastFlushAt = now;
    // The entries are JSON already: the batch is assembled, not serialised again.
    const text = `{"type":"events","events":[${observer.pending.join(',')}]}`;
    observer.pending = [];
    this.connections.send(observer.socket, text, live && Buffer.byteLength(text) < LIVE_DEFLATE_MIN_BYTES ? { compress: false } : undefined);
  }
}
