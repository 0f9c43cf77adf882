import { eventsPath } from './auth.js';
import type { LiveEvent } from './types.js';

/**
 * The dashboard's link to fleetd. Live updates come over the /v1/events WebSocket (subscribe to
 * topics, receive batched events); while the socket is down, views poll the HTTP API instead, and
 * the socket is retried with backoff. The state the header shows:
 *   live      the socket is open; views update from events
 *   polling   no socket, but HTTP answers; views poll
 *   offline   HTTP fails too; views keep polling, which is how the page notices fleetd is back
 *   refused   fleetd refused the credential (401, or 403 to reading): nothing is retried until the
 *             operator signs in again, so a bad key cannot turn into a storm of reconnections
 */
export type ConnectionState = 'connecting' | 'live' | 'polling' | 'offline' | 'refused';

type Handler = (events: LiveEvent[]) => void;

/** Waits for the server to confirm a subscription: events from then on are sure to arrive. */
interface ReadyWaiter {
  /** The number of subscribe/unsubscribe messages sent when it started waiting. */
  afterMessage: number;
  ready: () => void;
}

const RETRY_MIN_MS = 1_000;
const RETRY_MAX_MS = 15_000;

class Connection {
  state: ConnectionState = 'connecting';
  /** fleetd's own words for why it refused, while refused. */
  refusal = '';
  private socket: WebSocket | null = null;
  private retryMs = RETRY_MIN_MS;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private readonly stateListeners = new Set<(s: ConnectionState) => void>();
  /** Subscribers per topic; a topic is subscribed on the socket while it has one. */
  private readonly topics = new Map<string, Set<Handler>>();
  /**
   * The server answers each subscribe and unsubscribe, in order, with the socket's topics (or an
   * error): counting messages and answers tells when a subscription has taken effect.
   */
  private messagesSent = 0;
  private messagesAnswered = 0;
  /** The last event received and the numbering it belongs to: a new socket resumes after it (/v1/events?since=&epoch=). */
  private lastSeq = 0;
  private epoch = '';
  private readonly readyWaiters = new Set<ReadyWaiter>();

  start(): void {
    this.open();
  }

  onState(listener: (s: ConnectionState) => void): () => void {
    this.stateListeners.add(listener);
    return () => this.stateListeners.delete(listener);
  }

  /**
   * Delivers the events of these topics to handler while live; returns the unsubscribe. `ready` is
   * called once the server has confirmed the topics on the open socket: data loaded from then on
   * misses no event, which data loaded before the confirmation could.
   */
  subscribe(topics: string[], handler: Handler, ready?: () => void): () => void {
    const added: string[] = [];
    for (const t of topics) {
      let set = this.topics.get(t);
      if (!set) {
        set = new Set();
        this.topics.set(t, set);
        added.push(t);
      }
      set.add(handler);
    }
    if (added.length) this.sendTopics({ type: 'subscribe', topics: added });
    const waiter: ReadyWaiter | undefined = ready && { afterMessage: this.messagesSent, ready };
    if (waiter) {
      this.readyWaiters.add(waiter);
      this.wakeReady();
    }
    return () => {
      if (waiter) this.readyWaiters.delete(waiter);
      const removed: string[] = [];
      for (const t of topics) {
        const set = this.topics.get(t);
        if (!set) continue;
        set.delete(handler);
        if (set.size === 0) {
          this.topics.delete(t);
          removed.push(t);
        }
      }
      if (removed.length) this.sendTopics({ type: 'unsubscribe', topics: removed });
    };
  }

  httpOk(): void {
    if (this.state === 'offline' || this.state === 'connecting') this.setState(this.socket?.readyState === WebSocket.OPEN ? 'live' : 'polling');
  }

  httpFailed(): void {
    if (this.state !== 'live' && this.state !== 'refused') this.setState('offline');
  }

  /** fleetd refused the credential: stop, and say why, until restart(). */
  refused(reason: string): void {
    this.refusal = reason;
    clearTimeout(this.retryTimer);
    const socket = this.socket;
    this.socket = null;
    socket?.close();
    this.setState('refused');
  }

  /** Asks fleetd over plain HTTP whether it refuses the credential at `path`; if it does, stops. */
  private async refusedBy(path: string): Promise<boolean> {
    const reason = await probeRefusal(path);
    if (reason === null) return false;
    this.refused(reason);
    return true;
  }

  /**
   * Opens the stream afresh for the namespace now picked: the old socket's events stop, and the new
   * one does not resume from them (the views load again).
   */
  reopen(): void {
    if (this.state === 'refused') return;
    const old = this.socket;
    this.socket = null;
    old?.close();
    this.epoch = '';
    this.lastSeq = 0;
    this.retryMs = RETRY_MIN_MS;
    this.open();
  }

  /** Starts over with the credential now stored (after signing in). */
  restart(): void {
    this.refusal = '';
    this.retryMs = RETRY_MIN_MS;
    this.setState('connecting');
    this.open();
  }

  private setState(s: ConnectionState): void {
    if (s === this.state) return;
    this.state = s;
    for (const l of this.stateListeners) l(s);
  }

  private sendTopics(message: { type: 'subscribe' | 'unsubscribe'; topics: string[] }): void {
    if (this.socket?.readyState !== WebSocket.OPEN) return;
    this.socket.send(JSON.stringify(message));
    this.messagesSent++;
  }

  private wakeReady(): void {
    if (this.socket?.readyState !== WebSocket.OPEN) return;
    for (const w of this.readyWaiters) {
      if (this.messagesAnswered < w.afterMessage) continue;
      this.readyWaiters.delete(w);
      w.ready();
    }
  }

  private open(): void {
    clearTimeout(this.retryTimer);
    const path = eventsPath();
    // Events that happened while the socket was away are replayed by fleetd (from its window) before
    // anything live; what it no longer holds it reports as a gap, which the views' reload covers.
    const resume = this.epoch ? `${path.includes('?') ? '&' : '?'}since=${this.lastSeq}&epoch=${encodeURIComponent(this.epoch)}` : '';
    const socket = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}${path}${resume}`);
    this.socket = socket;
    let opened = false;
    socket.onopen = () => {
      opened = true;
      this.retryMs = RETRY_MIN_MS;
      this.messagesSent = this.messagesAnswered = 0;
      if (this.topics.size) this.sendTopics({ type: 'subscribe', topics: [...this.topics.keys()] });
      // Waiters from before the socket opened are covered by that one subscribe.
      for (const w of this.readyWaiters) w.afterMessage = this.messagesSent;
      this.setState('live');
    };
    socket.onmessage = (message) => {
      // A socket being closed for another namespace may still deliver what it had.
      if (this.socket !== socket) return;
      let parsed: { type?: string; events?: LiveEvent[]; epoch?: string; seq?: number };
      try {
        parsed = JSON.parse(String(message.data));
      } catch {
        return;
      }
      if (parsed.type === 'subscribed' && typeof parsed.epoch === 'string' && parsed.epoch !== this.epoch) {
        // Another numbering (fleetd restarted, or another node): only what follows counts in it.
        this.epoch = parsed.epoch;
        this.lastSeq = parsed.seq ?? 0;
      }
      if (parsed.type === 'subscribed' || parsed.type === 'error') {
        // An error answer (a topic this server does not know) wakes the waiters too: they load
        // without that topic's events rather than never.
        this.messagesAnswered++;
        this.wakeReady();
        return;
      }
      if (parsed.type !== 'events' || !Array.isArray(parsed.events)) return;
      // Group the batch by handler, so that each view gets one call per batch.
      const byHandler = new Map<Handler, LiveEvent[]>();
      for (const e of parsed.events) {
        if (typeof e.seq === 'number' && e.seq > this.lastSeq) this.lastSeq = e.seq;
        for (const h of this.topics.get(e.topic) ?? []) {
          let list = byHandler.get(h);
          if (!list) byHandler.set(h, (list = []));
          list.push(e);
        }
      }
      for (const [h, events] of byHandler) h(events);
    };
    socket.onclose = async () => {
      if (this.socket !== socket) return;
      this.socket = null;
      // Until HTTP says otherwise, assume fleetd answers and let the views poll.
      if (this.state === 'live' || this.state === 'connecting') this.setState('polling');
      // A browser does not tell why an upgrade was refused: the same address over plain HTTP does.
      if (!opened && (await this.refusedBy(path))) return;
      if (this.state === 'refused' || this.socket) return;
      this.retryTimer = setTimeout(() => this.open(), this.retryMs);
      this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
    };
  }
}

/** fleetd's reason when it answers `path` with 401, or 403 (a credential that may not read); else null. */
async function probeRefusal(path: string): Promise<string | null> {
  try {
    const res = await fetch(path, { cache: 'no-store' });
    if (res.status !== 401 && res.status !== 403) return null;
    const body = await res.json().catch(() => null);
    return body?.error?.message ?? `HTTP ${res.status}`;
  } catch {
    return null;
  }
}

export const connection = new Connection();
