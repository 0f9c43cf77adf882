import { randomUUID } from 'node:crypto';
import WebSocket from 'ws';
import type { AgentJson, TaskJson } from '../protocol/agent-stream.js';
import type { ObserverServerMessage, StreamEvent } from '../protocol/events.js';
import { FleetAgent, type FleetAgentOptions } from './agent.js';
import { FleetApiError } from './errors.js';

export interface FleetClientOptions {
  /** The server, e.g. http://localhost:7070. Give `url` or `urls`. */
  url?: string;
  /**
   * The nodes of one cluster. Requests go to one node at a time; when it cannot be reached or
   * answers 502, 503 or 504, the client moves to the next one (see `failover`).
   */
  urls?: string[];
  /** Sent as `Authorization: Bearer <token>` on every request. */
  token?: string;
  /**
   * Retries on another node. A call is tried at most `attempts` times, waiting a full jitter
   * between 0 and min(maxMs, minMs * 2^attempt) before each retry. Only calls that are safe to repeat
   * are retried: any call the failed node never received (connection refused), and otherwise only
   * reads, heartbeats, lease extensions, completions and failures (a repeat changes nothing), and
   * submits, which carry an idempotency key (the client makes one for a task that has none).
   * Defaults: attempts 3 per node with several nodes, 1 (no retry) with one; minMs 100; maxMs 2000.
   */
  failover?: { attempts?: number; minMs?: number; maxMs?: number };
}

export interface RequestOptions {
  signal?: AbortSignal;
  /** Repeating the call changes nothing (or the server dedupes it): it may be retried after a lost connection or a 5xx. GET and DELETE are. */
  idempotent?: boolean;
}

/** Connection errors raised before the request left: any call may go to another node. */
const NOT_SENT = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'UND_ERR_CONNECT_TIMEOUT']);
/** Connection errors that may come after the node received (and acted on) the request. */
const CONNECTION_LOST = new Set(['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED']);
/** Answers of a node (or a proxy before it) that is down, overloaded or restarting. */
const NODE_UNAVAILABLE = new Set([502, 503, 504]);

/** The system error code behind a failed fetch (undici wraps it in `cause`, sometimes in an AggregateError). */
export function connectionErrorCode(err: unknown): string | undefined {
  const cause = (err as { cause?: { code?: string; errors?: { code?: string }[] } })?.cause;
  return cause?.code ?? cause?.errors?.[0]?.code ?? (err as { code?: string })?.code;
}

/** Whether a connection error means the node is gone (rather than a bad request): move to the next node. */
export function isNodeFailure(err: unknown): boolean {
  const code = connectionErrorCode(err);
  return code !== undefined && (NOT_SENT.has(code) || CONNECTION_LOST.has(code));
}

/** A body as JSON, or undefined when it is empty or not JSON (a proxy's HTML error page). */
function parseJson(text: string): any {
  try {
    return text === '' ? undefined : JSON.parse(text);
  } catch {
    return undefined;
  }
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export interface TaskSubmit {
  type: string;
  payload?: unknown;
  priority?: number;
  requires?: string[];
  idempotencyKey?: string;
  maxAttempts?: number;
  leaseMs?: number;
  backoffMs?: number;
  /** ISO 8601; or give delayMs. */
  runAt?: string;
  delayMs?: number;
}

export interface TaskFilters {
  status?: 'scheduled' | 'queued' | 'leased' | 'completed' | 'dead' | 'cancelled';
  type?: string;
  agentId?: string;
  limit?: number;
  cursor?: string;
}

export interface Submitted {
  task: TaskJson;
  /** false when the idempotency key had been used: this is the first task, not a new one. */
  created: boolean;
}

export interface Subscription {
  subscribe(topics: string[]): void;
  unsubscribe(topics: string[]): void;
  close(): void;
}

/** The fleetd SDK for code that submits and watches work. `agent()` makes a worker. */
export class FleetClient {
  /** Every node this client may use, in the order it moves through them. */
  readonly urls: string[];
  private current = 0;
  private readonly attempts: number;
  private readonly backoff: { minMs: number; maxMs: number };

  constructor(readonly options: FleetClientOptions) {
    const urls = options.urls ?? (options.url === undefined ? [] : [options.url]);
    if (urls.length === 0) throw new TypeError('FleetClient needs url or urls');
    this.urls = urls.map((u) => u.replace(/\/+$/, ''));
    const { attempts = this.urls.length > 1 ? 3 * this.urls.length : 1, minMs = 100, maxMs = 2_000 } = options.failover ?? {};
    this.attempts = attempts;
    this.backoff = { minMs, maxMs };
  }

  /** The node requests go to now. */
  get url(): string {
    return this.urls[this.current];
  }

  /** Moves on from `failed` to the next node, unless another caller has already moved on from it. */
  failover(failed: string): void {
    if (this.urls[this.current] === failed) this.current = (this.current + 1) % this.urls.length;
  }

  /** A full jitter delay before retry number `attempt`. */
  retryDelay(attempt: number): number {
    return Math.random() * Math.min(this.backoff.maxMs, this.backoff.minMs * 2 ** attempt);
  }

  /**
   * One HTTP call; an error answer throws FleetApiError with its code. A node that cannot be reached
   * or answers 502/503/504 makes the client move to the next node, and the call is retried there
   * when that is safe (see FleetClientOptions.failover).
   */
  async request<T>(method: string, path: string, body?: unknown, options: RequestOptions = {}): Promise<T> {
    const idempotent = options.idempotent ?? (method === 'GET' || method === 'DELETE');
    const headers: Record<string, string> = {};
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (this.options.token) headers.authorization = `Bearer ${this.options.token}`;
    const init = { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: options.signal };
    for (let attempt = 1; ; attempt++) {
      const node = this.url;
      let res: Response;
      try {
        res = await fetch(node + path, init);
      } catch (err) {
        if (options.signal?.aborted || !isNodeFailure(err)) throw err;
        this.failover(node);
        const unsent = NOT_SENT.has(connectionErrorCode(err)!);
        if (attempt >= this.attempts || !(unsent || idempotent)) throw err;
        await sleep(this.retryDelay(attempt));
        continue;
      }
      const text = await res.text();
      if (NODE_UNAVAILABLE.has(res.status)) {
        this.failover(node);
        if (idempotent && attempt < this.attempts) {
          await sleep(this.retryDelay(attempt));
          continue;
        }
      }
      const parsed = parseJson(text);
      if (!res.ok) {
        const error = parsed?.error ?? {};
        throw new FleetApiError(res.status, error.code ?? 'FLEETD_ERR_HTTP', error.message ?? `HTTP ${res.status}`, error.details ?? {});
      }
      return parsed as T;
    }
  }

  /** Whether calls may be repeated on another node; then submits need an idempotency key to stay exactly-once. */
  private get retries(): boolean {
    return this.attempts > 1;
  }

  /**
   * Gives each task without an idempotency key one of the client's own, when a submit may be
   * retried; a retry that finds its first attempt's task then reports it as created, which it was.
   */
  private async submitKeyed(tasks: TaskSubmit[], send: (tasks: TaskSubmit[]) => Promise<Submitted[]>): Promise<Submitted[]> {
    if (!this.retries) return send(tasks);
    const own = tasks.map((t) => t.idempotencyKey === undefined);
    const submitted = await send(tasks.map((t, i) => (own[i] ? { ...t, idempotencyKey: `fleetd-client:${randomUUID()}` } : t)));
    return submitted.map((s, i) => (own[i] ? { ...s, created: true } : s));
  }

  async submit(task: TaskSubmit): Promise<Submitted> {
    const [submitted] = await this.submitKeyed([task], ([keyed]) =>
      this.request<Submitted>('POST', '/v1/tasks', keyed, { idempotent: keyed.idempotencyKey !== undefined }).then((s) => [s]),
    );
    return submitted;
  }

  /** All or nothing: one bad task rejects the whole batch. */
  submitBatch(tasks: TaskSubmit[]): Promise<Submitted[]> {
    return this.submitKeyed(tasks, async (keyed) => {
      const idempotent = keyed.every((t) => t.idempotencyKey !== undefined);
      return (await this.request<{ items: Submitted[] }>('POST', '/v1/tasks/batch', { tasks: keyed }, { idempotent })).items;
    });
  }

  get(id: number): Promise<TaskJson> {
    return this.request('GET', `/v1/tasks/${id}`);
  }

  list(filters: TaskFilters = {}): Promise<{ items: TaskJson[]; nextCursor: string | null }> {
    const query = new URLSearchParams(Object.entries(filters).map(([k, v]) => [k, String(v)])).toString();
    return this.request('GET', `/v1/tasks${query ? `?${query}` : ''}`);
  }

  cancel(id: number): Promise<TaskJson> {
    return this.request('DELETE', `/v1/tasks/${id}`);
  }

  stats(): Promise<Record<string, unknown>> {
    return this.request('GET', '/v1/stats');
  }

  registerAgent(input: { name: string; capabilities?: string[]; labels?: Record<string, string>; maxConcurrency?: number }): Promise<{ agent: AgentJson; token: string }> {
    return this.request('POST', '/v1/agents', input);
  }

  /**
   * Opens the event stream and subscribes to `topics` (`tasks`, `task:<id>`, `agents`, `locks`,
   * `queue:<type>`, `stats`); `onEvent` gets each event. Resolves once the subscription is in place.
   */
  subscribe(topics: string[], onEvent: (event: StreamEvent) => void, onError: (err: Error) => void = () => {}): Promise<Subscription> {
    const socket = new WebSocket(`${this.url.replace(/^http/, 'ws')}/v1/events`, {
      headers: this.options.token ? { authorization: `Bearer ${this.options.token}` } : {},
    });
    const send = (message: unknown) => socket.send(JSON.stringify(message));
    return new Promise((resolve, reject) => {
      let ready = false;
      socket.once('open', () => send({ type: 'subscribe', topics }));
      socket.once('error', (err) => (ready ? onError(err) : reject(err)));
      socket.on('message', (data) => {
        const message = JSON.parse(data.toString()) as ObserverServerMessage;
        if (message.type === 'events') for (const event of message.events) onEvent(event);
        else if (message.type === 'error') {
          const err = new FleetApiError(400, message.error.code, message.error.message, message.error.details);
          if (ready) onError(err);
          else reject(err);
        } else if (!ready) {
          ready = true;
          resolve({
            subscribe: (more) => send({ type: 'subscribe', topics: more }),
            unsubscribe: (less) => send({ type: 'unsubscribe', topics: less }),
            close: () => socket.close(),
          });
        }
      });
    });
  }

  /** A worker: `client.agent({ name, capabilities, concurrency }).work(handler)`. */
  agent(options: FleetAgentOptions): FleetAgent {
    return new FleetAgent(this, options);
  }
}
