import WebSocket from 'ws';
import type { ObserverServerMessage, StreamEvent } from './wire.js';
import { FleetApiError } from './errors.js';
import { fullJitter } from './backoff.js';
import { isNodeFailure } from './connection.js';

/** What a subscription needs of the client that opened it. */
export interface SubscriptionClient {
  readonly url: string;
  failover(failed: string): void;
  /** Options for sockets: headers with the client's API key and namespace, the authorities given as `ca` (FleetClient). */
  socketOptions(): { headers: Record<string, string>; ca?: (string | Buffer)[] };
}

/** Events that may have been missed: the server no longer held them (`window`), its numbering changed (`epoch`: a restart, another node), or another node's events were lost on the way (`relay`). */
export type Gap = Extract<ObserverServerMessage, { type: 'gap' }>;

/** Told when events may have been missed and were not replayed (its `gap` says which numbers). */
export class SubscriptionGapError extends Error {
  constructor(readonly gap: Gap) {
    super(
      gap.reason === 'window'
        ? `events ${gap.from} to ${gap.to} were no longer retained by the server: read the current state over REST`
        : gap.reason === 'relay'
          ? "another node's events were lost on their way to this one: read the current state over REST"
          : 'the server restarted, or this is another node: events since the last one seen may have been missed; read the current state over REST',
    );
    this.name = 'SubscriptionGapError';
  }
}

export interface SubscribeOptions {
  /** Resume after this event (its `seq`) of `epoch`, as a subscription's `lastSeq` and `epoch` say. */
  since?: number;
  epoch?: string;
  /** Told of each gap; without it, gaps go to onError as a SubscriptionGapError. */
  onGap?: (gap: Gap) => void;
  /** Reconnect backoff: full jitter between 0 and min(maxMs, minMs * 2^attempt). Defaults to 250 ms and 10 s. */
  reconnect?: { minMs?: number; maxMs?: number };
}

export interface Subscription {
  subscribe(topics: string[]): void;
  unsubscribe(topics: string[]): void;
  close(): void;
  /** The number of the last event received (0 before any), and the server numbering it belongs to. */
  readonly lastSeq: number;
  readonly epoch: string | undefined;
}

/**
 * A subscription to the observer stream that outlives its socket: when the connection drops, it
 * reconnects by itself (with backoff, moving to the next node when one is gone) and resumes after
 * the last event it delivered, which the server replays from its retained window. What the server
 * can no longer replay is reported (onGap), never skipped in silence.
 */
export class ResilientSubscription implements Subscription {
  private readonly topics: Set<string>;
  private socket: WebSocket | undefined;
  private closed = false;
  private attempt = 0;
  lastSeq: number;
  epoch: string | undefined;

  constructor(
    private readonly client: SubscriptionClient,
    topics: string[],
    private readonly onEvent: (event: StreamEvent) => void,
    private readonly onError: (err: Error) => void,
    private readonly options: SubscribeOptions,
  ) {
    this.topics = new Set(topics);
    this.lastSeq = options.since ?? 0;
    this.epoch = options.epoch;
  }

  /** Resolves once the first connection is subscribed; rejects when it could not be (a refused key, a bad topic). */
  start(): Promise<this> {
    return new Promise((resolve, reject) => this.connect(resolve, reject, this.options.since !== undefined));
  }

  subscribe(topics: string[]): void {
    for (const t of topics) this.topics.add(t);
    this.send({ type: 'subscribe', topics });
  }

  unsubscribe(topics: string[]): void {
    for (const t of topics) this.topics.delete(t);
    this.send({ type: 'unsubscribe', topics });
  }

  close(): void {
    this.closed = true;
    this.socket?.close();
  }

  private send(message: unknown): void {
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(message));
  }

  private connect(resolve?: (s: this) => void, reject?: (err: Error) => void, resume = true): void {
    const node = this.client.url;
    const socket = new WebSocket(`${node.replace(/^http/, 'ws')}/v1/events`, this.client.socketOptions());
    this.socket = socket;
    let subscribed = false;
    socket.once('open', () => {
      const since = resume ? { since: this.lastSeq, ...(this.epoch === undefined ? {} : { epoch: this.epoch }) } : {};
      socket.send(JSON.stringify({ type: 'subscribe', topics: [...this.topics], ...since }));
    });
    socket.on('error', (err) => {
      if (isNodeFailure(err)) this.client.failover(node);
      if (!subscribed && reject) reject(err);
    });
    socket.on('message', (data) => {
      const message = JSON.parse(data.toString()) as ObserverServerMessage;
      if (message.type === 'events') {
        for (const event of message.events) {
          if (event.seq > this.lastSeq) this.lastSeq = event.seq;
          this.onEvent(event);
        }
      } else if (message.type === 'subscribed') {
        if (this.epoch !== message.epoch) {
          // Another numbering: only what comes after this answer counts in it.
          this.epoch = message.epoch;
          this.lastSeq = message.seq;
        }
        if (!subscribed) {
          subscribed = true;
          this.attempt = 0;
          resolve?.(this);
        }
      } else if (message.type === 'gap') {
        // A relay gap starts a new numbering at the server; the numbers themselves go on.
        this.epoch = message.epoch;
        if (this.options.onGap) this.options.onGap(message);
        else this.onError(new SubscriptionGapError(message));
      } else if (message.type === 'error') {
        const err = FleetApiError.fromWire(message.error);
        if (!subscribed && reject) {
          reject(err);
          this.closed = true;
          socket.close();
        } else this.onError(err);
      }
    });
    socket.once('close', (code) => {
      if (code === 1006) this.client.failover(node);
      if (this.closed || (!subscribed && reject)) return;
      const { minMs = 250, maxMs = 10_000 } = this.options.reconnect ?? {};
      const delay = fullJitter(this.attempt++, minMs, maxMs);
      setTimeout(() => {
        if (!this.closed) this.connect();
      }, delay).unref();
    });
  }
}
