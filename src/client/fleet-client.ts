import { randomUUID } from 'node:crypto';
import WebSocket from 'ws';
import type { AgentJson, TaskJson } from '../protocol/agent-stream.js';
import type { ObserverServerMessage, StreamEvent } from '../protocol/events.js';
import { FleetAgent, type FleetAgentOptions } from './agent.js';
import { FleetApiError } from './errors.js';

export interface FleetClientOptions {
  /** The server, e.g. http://localhost:7070. */
  url: string;
  /**
   * An API key (`fleetd keys create`), sent as `Authorization: Bearer <key>`. A submit key is enough
   * to submit tasks and register agents; an agent then acts with its own token.
   */
  apiKey?: string;
  /**
   * Resends of a request that may be repeated safely (reads, and submits, which carry an idempotency
   * key) when the connection fails or the server answers 502, 503 or 504. Defaults to 3.
   */
  retries?: number;
}

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

const RETRY_STATUSES = new Set([502, 503, 504]);

const withKey = (task: TaskSubmit): TaskSubmit => (task.idempotencyKey === undefined ? { ...task, idempotencyKey: `sdk-${randomUUID()}` } : task);

/** The fleetd SDK for code that submits and watches work. `agent()` makes a worker. */
export class FleetClient {
  readonly url: string;

  constructor(readonly options: FleetClientOptions) {
    this.url = options.url.replace(/\/+$/, '');
  }

  /**
   * One HTTP call, with the client's API key unless `credential` names another; an error answer
   * throws FleetApiError with its code. With `retry` (the default for GET), a dropped connection or
   * a 502/503/504 is tried again with jittered backoff: only for requests that are safe to repeat.
   */
  async request<T>(
    method: string,
    path: string,
    body?: unknown,
    options: { signal?: AbortSignal; credential?: string; retry?: boolean } = {},
  ): Promise<T> {
    const retries = (options.retry ?? method === 'GET') ? (this.options.retries ?? 3) : 0;
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.requestOnce<T>(method, path, body, options);
      } catch (err) {
        const transient = err instanceof FleetApiError ? RETRY_STATUSES.has(err.status) : !options.signal?.aborted;
        if (!transient || attempt >= retries) throw err;
        await new Promise((r) => setTimeout(r, Math.random() * 100 * 2 ** attempt));
      }
    }
  }

  private async requestOnce<T>(method: string, path: string, body: unknown, options: { signal?: AbortSignal; credential?: string }): Promise<T> {
    const { signal } = options;
    const credential = options.credential ?? this.options.apiKey;
    const headers: Record<string, string> = {};
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (credential) headers.authorization = `Bearer ${credential}`;
    const res = await fetch(this.url + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal });
    const text = await res.text();
    const parsed = text === '' ? undefined : JSON.parse(text);
    if (!res.ok) {
      const error = parsed?.error ?? {};
      throw new FleetApiError(res.status, error.code ?? 'FLEETD_ERR_HTTP', error.message ?? `HTTP ${res.status}`, error.details ?? {});
    }
    return parsed as T;
  }

  /**
   * Submits a task. Without an idempotency key it is given one, so that a submit whose answer was
   * lost can be resent without creating the task twice.
   */
  submit(task: TaskSubmit): Promise<Submitted> {
    return this.request('POST', '/v1/tasks', withKey(task), { retry: true });
  }

  /** All or nothing: one bad task rejects the whole batch. Each task gets a key as in `submit`. */
  async submitBatch(tasks: TaskSubmit[]): Promise<Submitted[]> {
    return (await this.request<{ items: Submitted[] }>('POST', '/v1/tasks/batch', { tasks: tasks.map(withKey) }, { retry: true })).items;
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
      headers: this.options.apiKey ? { authorization: `Bearer ${this.options.apiKey}` } : {},
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
