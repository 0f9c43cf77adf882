import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { unreported, type DependencyReporter } from '../domain/dependencies.js';
import { connectRedis, type RedisSettings } from '../redis/connection.js';
import type { AnyEventHandler, Bus, EventHandler, EventName, FleetEvents } from './bus.js';
import { LocalBus } from './local-bus.js';

/** Events that stay on the node that published them. */
const NODE_LOCAL: ReadonlySet<EventName> = new Set<EventName>([
  // Wake-ups travel through the store (PostgreSQL LISTEN/NOTIFY fires at commit, for every path
  // that queues tasks, on any node); relaying them here as well would wake every waiter twice.
  'tasks.available',
]);

/**
 * The events of a task's life that only observers watching tasks, and a task's activity stream,
 * want of another node: a node hears them, and completed tasks' results, only while it asks
 * (hearAll). Every other event, the task ends the waiters, the agents' sockets and the stats
 * count on among them, reaches every node. Heard by every node, these were two thirds of the bytes
 * relayed, and half of what hearing another node cost a node (docs/benchmarks.md).
 */
const ON_DEMAND: ReadonlySet<EventName> = new Set<EventName>(['task.created', 'task.claimed', 'task.extended', 'task.activity']);

/** What a node that did not ask for every event hears of these (the same array when that is all of them). */
function leanOf(events: [EventName, unknown][]): [EventName, unknown][] {
  const isLean = ([name, event]: [EventName, unknown]) =>
    !ON_DEMAND.has(name) && !(name === 'task.completed' && (event as FleetEvents['task.completed']).result !== undefined);
  if (events.every(isLean)) return events;
  const lean: [EventName, unknown][] = [];
  for (const entry of events) {
    const [name, event] = entry;
    if (ON_DEMAND.has(name)) continue;
    // As an event whose result is too large to carry: whoever wants it reads the task.
    if (name === 'task.completed') lean.push([name, { task: (event as FleetEvents['task.completed']).task, resultTruncated: true }]);
    else lean.push(entry);
  }
  return lean;
}

/** A message's sender and number, read from its first bytes (see flush) without parsing the rest. */
const MESSAGE_HEAD = /^\{"node":"([^"]+)","n":(\d+),/;

/**
 * The bus of a cluster: handlers on this node get this node's events at once (as on LocalBus) and
 * every other node's events through Redis pub/sub. Events published in one tick leave as one
 * message, on two channels: in full on `events:all`, and without what is relayed on demand (see
 * ON_DEMAND) on `events`. A node always listens to `events`, and to `events:all` as well while
 * something on it asks (hearAll). Messages are numbered per node, and the full copy is published
 * first: a node hearing both handles it and drops the lean copy by its number, unparsed. Nodes of a
 * version before the split publish on `events` only, and a node hearing all still hears them.
 * Delivery across nodes is best effort — while Redis is unreachable, remote events are dropped
 * (and counted): the store holds the truth, events only tell about it. Wake-ups never depend on it
 * (see NODE_LOCAL), and caches are dropped when Redis is back (cache/response-cache.ts).
 */
export class RedisBus implements Bus {
  readonly nodeId = randomUUID();
  private readonly ownPrefix = `{"node":${JSON.stringify(this.nodeId)},`;
  /** Events that could not be sent to other nodes because Redis was unreachable. */
  dropped = 0;
  relaying = false;
  private readonly local: LocalBus;
  /** Where every message goes without what is relayed on demand. */
  private readonly channel: string;
  /** Where every message goes in full. */
  private readonly allChannel: string;
  /** How many ask to hear every event (hearAll), and whether this node listens to `events:all` too (undefined: not known, after a move failed). */
  private demand = 0;
  private hearingAll: boolean | undefined = false;
  /** Moves between the channels, one move at a time. */
  private moving: Promise<void> = Promise.resolve();
  private outbox: [EventName, unknown][] = [];
  private flushing: NodeJS.Immediate | undefined;
  /** This node's messages are numbered, sent or not, so that another node can tell when it missed some. */
  private sent = 0;
  private readonly received = new Map<string, number>();
  private readonly gapListeners = new Set<(node: string, missedMessages: number) => void>();

  private constructor(
    private readonly pub: Redis,
    private readonly sub: Redis,
    settings: RedisSettings,
    onHandlerError: (err: unknown, name: EventName) => void,
  ) {
    this.local = new LocalBus(onHandlerError);
    this.channel = `${settings.prefix}events`;
    this.allChannel = `${settings.prefix}events:all`;
  }

  /** `health` gives the reporter of each of its two connections (see core/dependencies.ts). */
  static async connect(
    settings: RedisSettings,
    onHandlerError: (err: unknown, name: EventName) => void = () => {},
    health: (role: string) => DependencyReporter = () => unreported,
  ): Promise<RedisBus> {
    const [pub, sub] = await Promise.all([connectRedis(settings, 'bus-pub', health('bus-pub')), connectRedis(settings, 'bus-sub', health('bus-sub'))]);
    const bus = new RedisBus(pub, sub, settings, onHandlerError);
    sub.on('message', (_channel: string, message: string) => bus.receive(message));
    await sub.subscribe(bus.channel);
    // A move that failed while Redis was unreachable is made when it is back.
    sub.on('ready', () => void bus.move());
    return bus;
  }

  private receive(message: string): void {
    // Redis hands every subscriber its own messages too: those are known by their first bytes (see
    // flush), and dropped unread rather than parsed, which cost a node of two as much as the other's.
    if (message.startsWith(this.ownPrefix)) return;
    // Heard on both channels while hearing all: the full copy came first and was handled.
    const head = MESSAGE_HEAD.exec(message);
    if (head) {
      const last = this.received.get(head[1]);
      if (last !== undefined && Number(head[2]) <= last) return;
    }
    let parsed: { node: string; n?: number; events: [EventName, unknown][] };
    try {
      parsed = JSON.parse(message);
    } catch {
      return;
    }
    if (parsed.node === this.nodeId) return;
    if (typeof parsed.n === 'number') {
      const last = this.received.get(parsed.node);
      if (last !== undefined && parsed.n <= last) return;
      this.received.set(parsed.node, parsed.n);
      // The first message heard from a node says nothing of what came before this node listened.
      if (last !== undefined && parsed.n > last + 1) for (const listener of this.gapListeners) listener(parsed.node, parsed.n - last - 1);
    }
    // Handlers run synchronously (LocalBus), so the flag covers exactly this delivery.
    this.relaying = true;
    try {
      for (const [name, event] of parsed.events) this.local.publish(name, event as FleetEvents[typeof name]);
    } finally {
      this.relaying = false;
    }
  }

  publish<K extends EventName>(name: K, event: FleetEvents[K]): void {
    // Into the outbox before the handlers run: what they publish of it goes after it.
    if (!NODE_LOCAL.has(name)) {
      this.outbox.push([name, event]);
      this.flushing ??= setImmediate(() => this.flush());
    }
    this.local.publish(name, event);
  }

  private flush(): void {
    this.flushing = undefined;
    const events = this.outbox;
    this.outbox = [];
    if (events.length === 0) return;
    const n = ++this.sent;
    if (this.pub.status !== 'ready') {
      this.dropped += events.length;
      return;
    }
    // `node` and `n` first, so that the message starts with ownPrefix and MESSAGE_HEAD reads it. In
    // full first: a node that hears both channels handles the full copy (see receive).
    const all = JSON.stringify({ node: this.nodeId, n, events });
    const lean = leanOf(events);
    // Either copy lost, some nodes miss the tick: counted once.
    let counted = false;
    const failed = () => {
      if (counted) return;
      counted = true;
      this.dropped += events.length;
    };
    this.pub.publish(this.allChannel, all).catch(failed);
    this.pub.publish(this.channel, lean === events ? all : JSON.stringify({ node: this.nodeId, n, events: lean })).catch(failed);
  }

  async hearAll(): Promise<() => Promise<void>> {
    this.demand++;
    await this.move();
    let given = false;
    return () => {
      if (given) return this.moving;
      given = true;
      this.demand--;
      return this.move();
    };
  }

  /**
   * Listens to `events:all` while there is demand, and leaves it when there is none; `events` is
   * heard throughout, so no message falls between. Resolves once done, or once it failed (Redis
   * unreachable: nothing is heard then anyway, and the move is made again when Redis is back). A
   * command that failed may still have been carried out (its answer late, or sent again on
   * reconnecting): whether Redis holds the subscription is then not known, and the next move sends
   * its command again.
   */
  private move(): Promise<void> {
    this.moving = this.moving.then(async () => {
      const wanted = this.demand > 0;
      if (wanted === this.hearingAll) return;
      this.hearingAll = undefined;
      try {
        await (wanted ? this.sub.subscribe(this.allChannel) : this.sub.unsubscribe(this.allChannel));
        this.hearingAll = wanted;
      } catch {
        // Made again on 'ready'.
      }
    });
    return this.moving;
  }

  subscribe<K extends EventName>(name: K, handler: EventHandler<K>): () => void {
    return this.local.subscribe(name, handler);
  }

  subscribeAll(handler: AnyEventHandler): () => void {
    return this.local.subscribeAll(handler);
  }

  onRelayGap(listener: (node: string, missedMessages: number) => void): () => void {
    this.gapListeners.add(listener);
    return () => this.gapListeners.delete(listener);
  }

  async close(): Promise<void> {
    if (this.flushing) clearImmediate(this.flushing);
    this.flush();
    await this.local.close();
    await Promise.all([this.pub.quit().catch(() => {}), this.sub.quit().catch(() => {})]);
  }
}
