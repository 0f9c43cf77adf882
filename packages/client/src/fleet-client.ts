import { randomUUID } from 'node:crypto';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { rootCertificates } from 'node:tls';
import WebSocket from 'ws';
import { NAMESPACE_HEADER, NAMESPACE_PATTERN, type AgentInput, type AgentJson, type ScheduleInput, type ScheduleJson, type StatsJson, type StreamEvent, type TaskActivityJson, type TaskInput, type TaskJson, type TaskStatus } from './wire.js';
import { FleetAgent, type FleetAgentOptions } from './agent.js';
import { fullJitter } from './backoff.js';
import { connectionErrorCode, isNodeFailure, NOT_SENT } from './connection.js';
import { ResilientSubscription, type SubscribeOptions, type Subscription } from './subscription.js';
import { FleetApiError, TaskCancelledError, TaskFailedError, TaskWaitTimeoutError } from './errors.js';

export interface FleetClientOptions {
  /** The server, e.g. http://localhost:7070. Give `url` or `urls`. */
  url?: string;
  /**
   * The nodes of one cluster. Requests go to one node at a time; when it cannot be reached, drops
   * the connection or answers 502, 503 or 504, the client moves to the next one.
   */
  urls?: string[];
  /**
   * An API key (`fleetd keys create`), sent as `Authorization: Bearer <key>`. A submit key is enough
   * to submit tasks and register agents; an agent then acts with its own token.
   */
  apiKey?: string;
  /**
   * Resends of a request after a failed connection or a 502/503/504, on the next node when there are
   * several: any request the server never received (connection refused), and otherwise only those
   * safe to repeat (reads, and submits, which carry an idempotency key). Defaults to 3 per node.
   */
  retries?: number;
  /**
   * Certificates (PEM) of the authorities to trust for https:// and wss:// besides the system's:
   * a fleetd serving HTTPS with a private CA's or a self-signed certificate (--tls-cert), e.g.
   * `ca: readFileSync('ca.pem')`. Used by every request, the event stream and agents' sockets.
   */
  ca?: string | Buffer | (string | Buffer)[];
  /**
   * The namespace this client acts in, sent as the Fleetd-Namespace header on every request and
   * socket: tasks are submitted to it, lists and reads see only it (a task of another namespace is a
   * 404), and agents made from this client register in it. Without it, a key scoped to one namespace
   * acts in that one, and a key of every namespace in `default` (and reads all of them).
   */
  namespace?: string;
}

const namespaceName = new RegExp(NAMESPACE_PATTERN);

/** Answers of a node (or a proxy before it) that is down, overloaded or restarting. */
const NODE_UNAVAILABLE = new Set([502, 503, 504]);
/** Longest wait of one `GET /v1/tasks/:id?waitMs=`: under the server's default maximum (30 s) and the usual proxy timeouts. */
const WAIT_SLICE_MS = 25_000;

/** A body as JSON, or undefined when it is empty or not JSON (a proxy's HTML error page). */
function parseJson(text: string): any {
  try {
    return text === '' ? undefined : JSON.parse(text);
  } catch {
    return undefined;
  }
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** A task to submit (`runAt` is ISO 8601; or give `delayMs`). */
export type TaskSubmit = TaskInput;

export interface TaskFilters {
  status?: TaskStatus;
  type?: string;
  agentId?: string;
  /** Tasks that carry this tag. */
  tag?: string;
  limit?: number;
  cursor?: string;
}

export interface Submitted {
  task: TaskJson;
  /** false when the idempotency key had been used: this is the first task, not a new one. */
  created: boolean;
}

/** A submitted task as `submitBatch(tasks, { minimal: true })` answers it: without its payload, result and error. */
export interface SubmittedMinimal {
  task: Omit<TaskJson, 'payload' | 'result' | 'error'>;
  created: boolean;
}


const withKey = (task: TaskSubmit): TaskSubmit => (task.idempotencyKey === undefined ? { ...task, idempotencyKey: `sdk-${randomUUID()}` } : task);

/** The fleetd SDK for code that submits and watches work. `agent()` makes a worker. */
export class FleetClient {
  /** Every node this client may use, in the order it moves through them. */
  readonly urls: string[];
  private current = 0;
  private readonly retries: number;
  /** Longest wait of one `GET /v1/tasks/:id?waitMs=`, lowered to the server's maxTaskWaitMs when it says so. */
  private waitSliceMs = WAIT_SLICE_MS;
  /** With `ca`: the system's authorities and the given ones, for TLS connections; else undefined (the defaults). */
  private readonly trusted: (string | Buffer)[] | undefined;
  /** Kept-alive HTTPS connections that trust `trusted` (fetch cannot be given authorities without a library). */
  private readonly httpsAgent: HttpsAgent | undefined;

  constructor(readonly options: FleetClientOptions) {
    const urls = options.urls ?? (options.url === undefined ? [] : [options.url]);
    if (urls.length === 0) throw new TypeError('FleetClient needs url or urls');
    this.urls = urls.map((u) => u.replace(/\/+$/, ''));
    this.retries = options.retries ?? 3 * this.urls.length;
    // Said here rather than as a 400 on the first request, which may come long after (an agent's registration).
    if (options.namespace !== undefined && (typeof options.namespace !== 'string' || !namespaceName.test(options.namespace))) {
      throw new TypeError(`FleetClient: namespace ${JSON.stringify(options.namespace)} is not a namespace's name (lower-case letters, digits, - and _, starting with a letter or digit, at most 63 characters: ${NAMESPACE_PATTERN})`);
    }
    if (options.ca !== undefined) {
      // Node's `ca` replaces the system's list rather than adding to it: keep both.
      this.trusted = [...rootCertificates, ...(Array.isArray(options.ca) ? options.ca : [options.ca])];
      this.httpsAgent = new HttpsAgent({ keepAlive: true, ca: this.trusted });
    }
  }

  /** The headers every request and socket of this client carries: the credential, and the namespace when one was given. */
  private headers(credential: string | undefined): Record<string, string> {
    const headers: Record<string, string> = {};
    if (credential) headers.authorization = `Bearer ${credential}`;
    if (this.options.namespace !== undefined) headers[NAMESPACE_HEADER] = this.options.namespace;
    return headers;
  }

  /**
   * Options for a WebSocket to the server, sent with `credential` (the client's API key unless an
   * agent's token is given): its headers, and the trusted authorities when `ca` was given.
   */
  socketOptions(credential: string | undefined = this.options.apiKey): { headers: Record<string, string>; ca?: (string | Buffer)[] } {
    return this.trusted ? { headers: this.headers(credential), ca: this.trusted } : { headers: this.headers(credential) };
  }

  /** The node requests go to now. */
  get url(): string {
    return this.urls[this.current];
  }

  /** Moves on from `failed` to the next node, unless another caller has already moved on from it. */
  failover(failed: string): void {
    if (this.urls[this.current] === failed) this.current = (this.current + 1) % this.urls.length;
  }

  /**
   * One HTTP call, with the client's API key unless `credential` names another; an error answer
   * throws FleetApiError with its code. A node that cannot be reached, drops the connection or
   * answers 502/503/504 makes the client move to the next node; the call is resent there (after a
   * jittered backoff) if the node never received it, or with `retry` (the default for GET) when it
   * is safe to repeat.
   */
  async request<T>(
    method: string,
    path: string,
    body?: unknown,
    options: { signal?: AbortSignal; credential?: string; retry?: boolean; traceparent?: string } = {},
  ): Promise<T> {
    const retry = options.retry ?? method === 'GET';
    for (let attempt = 0; ; attempt++) {
      const node = this.url;
      try {
        return await this.requestOnce<T>(node, method, path, body, options);
      } catch (err) {
        if (options.signal?.aborted) throw err;
        const unavailable = err instanceof FleetApiError ? NODE_UNAVAILABLE.has(err.status) : true;
        if (!unavailable) throw err;
        if (err instanceof FleetApiError || isNodeFailure(err)) this.failover(node);
        const unsent = NOT_SENT.has(connectionErrorCode(err) ?? '');
        if (!(retry || unsent) || attempt >= this.retries) throw err;
        await sleep(fullJitter(attempt, 100, 2_000));
      }
    }
  }

  private async requestOnce<T>(node: string, method: string, path: string, body: unknown, options: { signal?: AbortSignal; credential?: string; traceparent?: string }): Promise<T> {
    const { signal } = options;
    const headers = this.headers(options.credential ?? this.options.apiKey);
    if (body !== undefined) headers['content-type'] = 'application/json';
    // W3C Trace Context: fleetd's span of the request joins the caller's trace.
    if (options.traceparent) headers.traceparent = options.traceparent;
    let res: Response;
    try {
      const init = { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal };
      res = this.httpsAgent && node.startsWith('https:') ? await this.fetchTrusting(node + path, init, this.httpsAgent) : await fetch(node + path, init);
    } catch (err) {
      if (signal?.aborted) throw err;
      // fetch says only "fetch failed": name the node and the reason; the system error stays the cause.
      const code = connectionErrorCode(err);
      throw Object.assign(new Error(`cannot reach ${node} (${code ?? (err as Error).message})`, { cause: (err as Error).cause ?? err }), { code });
    }
    const text = await res.text();
    const parsed = parseJson(text);
    if (!res.ok) {
      const error = parsed?.error ?? {};
      throw new FleetApiError(res.status, error.code ?? 'FLEETD_ERR_HTTP', error.message ?? `HTTP ${res.status}`, error.details ?? {});
    }
    return parsed as T;
  }

  /** A request over node:https with the trusted authorities, answered as fetch would. */
  private fetchTrusting(url: string, init: { method: string; headers: Record<string, string>; body?: string; signal?: AbortSignal }, agent: HttpsAgent): Promise<Response> {
    return new Promise((resolve, reject) => {
      const req = httpsRequest(url, { method: init.method, headers: init.headers, agent, signal: init.signal }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => resolve(new Response(res.statusCode === 204 || res.statusCode === 304 ? null : Buffer.concat(chunks), { status: res.statusCode })));
      });
      req.on('error', reject);
      req.end(init.body);
    });
  }

  /**
   * Submits a task. Without an idempotency key it is given one, so that a submit whose answer was
   * lost can be resent (on another node too) without creating the task twice.
   */
  submit(task: TaskSubmit, options: { traceparent?: string } = {}): Promise<Submitted> {
    return this.request('POST', '/v1/tasks', withKey(task), { retry: true, traceparent: options.traceparent });
  }

  /**
   * All or nothing: one bad task rejects the whole batch. Each task gets a key as in `submit`. With
   * `minimal`, each task is answered without its payload, result and error (`?return=minimal`), so
   * that long prompts are not sent back.
   */
  submitBatch(tasks: TaskSubmit[]): Promise<Submitted[]>;
  submitBatch(tasks: TaskSubmit[], options: { minimal: true }): Promise<SubmittedMinimal[]>;
  async submitBatch(tasks: TaskSubmit[], options: { minimal?: boolean } = {}): Promise<Submitted[] | SubmittedMinimal[]> {
    const path = options.minimal ? '/v1/tasks/batch?return=minimal' : '/v1/tasks/batch';
    return (await this.request<{ items: Submitted[] }>('POST', path, { tasks: tasks.map(withKey) }, { retry: true })).items;
  }

  get(id: number): Promise<TaskJson> {
    return this.request('GET', `/v1/tasks/${id}`);
  }

  /**
   * Waits for the task to end: resolves with its result once completed; throws TaskFailedError
   * (dead), TaskCancelledError, or TaskWaitTimeoutError after `timeoutMs` (none by default), each
   * carrying the task. One request at a time, answered by the server as soon as the task ends
   * (`GET /v1/tasks/:id?waitMs=`, in slices of at most WAIT_SLICE_MS, resent after a dropped connection).
   */
  async waitFor(id: number, options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<unknown> {
    const deadline = options.timeoutMs === undefined ? Infinity : Date.now() + options.timeoutMs;
    for (;;) {
      const waitMs = Math.ceil(Math.max(0, Math.min(this.waitSliceMs, deadline - Date.now())));
      let task: TaskJson;
      try {
        task = await this.request<TaskJson>('GET', `/v1/tasks/${id}?waitMs=${waitMs}`, undefined, { retry: true, signal: options.signal });
      } catch (err) {
        // A server whose maxTaskWaitMs is lower says so; later waits keep under it.
        const limit = (err as FleetApiError).details?.params as { limit?: unknown } | undefined;
        const lower = err instanceof FleetApiError && err.details.field === 'querystring.waitMs' && typeof limit?.limit === 'number' && limit.limit < waitMs;
        if (!lower) throw err;
        this.waitSliceMs = limit.limit as number;
        continue;
      }
      if (task.status === 'completed') return task.result;
      if (task.status === 'dead') throw new TaskFailedError(task);
      if (task.status === 'cancelled') throw new TaskCancelledError(task);
      if (Date.now() >= deadline) throw new TaskWaitTimeoutError(task, options.timeoutMs!);
    }
  }

  /**
   * Retries (dead, cancelled), cancels (scheduled, queued, leased) or deletes (finished) every task
   * the filter matches; `filter: {}` means every task. With `dryRun` it only counts. Needs an admin key.
   */
  bulk(
    action: 'retry' | 'cancel' | 'delete',
    filter: { status?: TaskStatus; type?: string; tag?: string; createdBefore?: string },
    options: { dryRun?: boolean } = {},
  ): Promise<{ matched: number; eligible: number; changed: number; dryRun: boolean }> {
    return this.request('POST', '/v1/tasks/bulk', { action, filter, dryRun: options.dryRun ?? false });
  }

  /** Submits a task and waits for it (`waitFor`): its result, or a typed error carrying the task. */
  async run(task: TaskSubmit, options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<unknown> {
    const { task: submitted } = await this.submit(task);
    return this.waitFor(submitted.id, options);
  }

  list(filters: TaskFilters = {}): Promise<{ items: TaskJson[]; nextCursor: string | null }> {
    const query = new URLSearchParams(Object.entries(filters).map(([k, v]) => [k, String(v)])).toString();
    return this.request('GET', `/v1/tasks${query ? `?${query}` : ''}`);
  }

  /** Cancels a task; the agent running it is told at once, with `reason`, and its handler's signal aborts. */
  cancel(id: number, options: { reason?: string } = {}): Promise<TaskJson> {
    const query = options.reason === undefined ? '' : `?${new URLSearchParams({ reason: options.reason })}`;
    return this.request('DELETE', `/v1/tasks/${id}${query}`);
  }

  /**
   * A task's latest progress and the retained tail of its log and output (entries after `since`,
   * at most `limit`; `more` says whether others follow).
   */
  logs(id: number, options: { since?: number; limit?: number } = {}): Promise<TaskActivityJson> {
    const query = new URLSearchParams();
    if (options.since !== undefined) query.set('since', String(options.since));
    if (options.limit !== undefined) query.set('limit', String(options.limit));
    const qs = query.size > 0 ? `?${query}` : '';
    return this.request('GET', `/v1/tasks/${id}/logs${qs}`);
  }

  /** Creates a recurring schedule: its task is submitted at every fire time of `cron`, once across nodes. */
  createSchedule(schedule: ScheduleInput): Promise<ScheduleJson> {
    return this.request('POST', '/v1/schedules', schedule);
  }

  schedule(name: string): Promise<ScheduleJson> {
    return this.request('GET', `/v1/schedules/${encodeURIComponent(name)}`);
  }

  schedules(page: { limit?: number; cursor?: string } = {}): Promise<{ items: ScheduleJson[]; nextCursor: string | null }> {
    const query = new URLSearchParams(Object.entries(page).map(([k, v]) => [k, String(v)])).toString();
    return this.request('GET', `/v1/schedules${query ? `?${query}` : ''}`);
  }

  pauseSchedule(name: string): Promise<ScheduleJson> {
    return this.request('POST', `/v1/schedules/${encodeURIComponent(name)}/pause`);
  }

  resumeSchedule(name: string): Promise<ScheduleJson> {
    return this.request('POST', `/v1/schedules/${encodeURIComponent(name)}/resume`);
  }

  deleteSchedule(name: string): Promise<ScheduleJson> {
    return this.request('DELETE', `/v1/schedules/${encodeURIComponent(name)}`);
  }

  stats(): Promise<StatsJson> {
    return this.request('GET', '/v1/stats');
  }

  registerAgent(input: AgentInput): Promise<{ agent: AgentJson; token: string }> {
    return this.request('POST', '/v1/agents', input);
  }

  /**
   * Opens the event stream and subscribes to `topics` (`tasks`, `task:<id>`, `agents`, `locks`,
   * `queue:<type>`, `stats`, `pipelines`, `run:<id>`); `onEvent` gets each event. Resolves once the
   * subscription is in place. A dropped connection is reopened by itself and resumes after the last
   * event delivered (options.since and epoch resume an earlier subscription); what the server no
   * longer holds is reported to options.onGap (else onError), never skipped in silence.
   */
  subscribe(topics: string[], onEvent: (event: StreamEvent) => void, onError: (err: Error) => void = () => {}, options: SubscribeOptions = {}): Promise<Subscription> {
    return new ResilientSubscription(this, topics, onEvent, onError, options).start();
  }

  /** A worker: `client.agent({ name, capabilities, concurrency }).work(handler)`. */
  agent(options: FleetAgentOptions): FleetAgent {
    return new FleetAgent(this, options);
  }
}
