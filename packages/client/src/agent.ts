import { EventEmitter } from 'node:events';
import WebSocket from 'ws';
import { AGENT_PROTOCOL_VERSION, type AgentInput, type AgentJson, type AgentMessage, type ServerMessage, type TaskJson } from './wire.js';
import { FleetApiError, NonRetryableError, RetryLaterError } from './errors.js';
import { isNodeFailure } from './connection.js';

/**
 * What an agent needs of the client that made it (a FleetClient): said here, so that the agent does
 * not import the client that imports it.
 */
export interface AgentClient {
  /** The node requests go to now. */
  readonly url: string;
  failover(failed: string): void;
  request<T>(method: string, path: string, body?: unknown, options?: { signal?: AbortSignal; credential?: string; retry?: boolean; traceparent?: string }): Promise<T>;
  registerAgent(input: AgentInput): Promise<{ agent: AgentJson; token: string }>;
}

export interface FleetAgentOptions {
  name: string;
  capabilities: string[];
  /** Most tasks run at once; the server never pushes more. Defaults to 1. */
  concurrency?: number;
  labels?: Record<string, string>;
  /** An agent registered already; without them the agent registers itself on `work()`. */
  id?: string;
  token?: string;
  /** `auto` (the default): WebSocket push, falling back to long-poll when the upgrade is refused. */
  transport?: 'auto' | 'ws' | 'poll';
  /**
   * Reconnect backoff: full jitter between 0 and min(maxMs, minMs * 2^attempt). Defaults to 250 ms and
   * 10 s. With several node URLs, a socket that could not connect or dropped without a closing
   * handshake reconnects to the next node, which resumes the agent's leases (its welcome lists them).
   */
  reconnect?: { minMs?: number; maxMs?: number };
}

export interface TaskContext {
  /** Aborted when the lease is lost or `stop()` runs out of patience: stop work and throw. */
  signal: AbortSignal;
  /**
   * Gives the task back for later without spending an attempt (throws a RetryLaterError, so the
   * handler ends here): it returns to the queue after delayMs.
   */
  release(delayMs: number, reason?: string): never;
}

export type TaskHandler = (task: TaskJson, context: TaskContext) => Promise<unknown> | unknown;

interface Running {
  task: TaskJson;
  controller: AbortController;
  done: Promise<void>;
}

const LONG_POLL_MS = 25_000;
const POLL_HEARTBEAT_MS = 10_000;
const REPORT_ATTEMPTS = 5;
const REPORT_BACKOFF_MAX_MS = 4_000;
const NO_WEBSOCKET = new Set([400, 404, 405, 426, 501]);
/** Refusals that mean "not now" rather than "no": a completion or failure is reported again after them. */
const TRANSIENT_CODES = new Set([
  'FLEETD_ERR_STORAGE_FULL',
  'FLEETD_ERR_STORE_UNAVAILABLE',
  'FLEETD_ERR_UNAVAILABLE',
  'FLEETD_ERR_SHUTTING_DOWN',
  'FLEETD_ERR_RATE_LIMITED',
]);

/** Waits `ms`, or less if `signal` aborts; its abort listener goes with it, so that a long outage's many retries do not pile listeners up. */
const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const onAbort = () => (clearTimeout(timer), resolve());
    const timer = setTimeout(() => (signal?.removeEventListener('abort', onAbort), resolve()), ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });

/**
 * A worker process's side of fleetd. Tasks arrive by WebSocket push under credit (never more than
 * `concurrency` at once), or by long-poll when WebSockets are refused. Each handler's lease is
 * extended while it runs; its return value completes the task and a throw fails it.
 *
 * Events: `connected` ({ transport }), `disconnected` ({ code, reason }), `task` (task), `error` (err).
 */
export class FleetAgent extends EventEmitter {
  private readonly concurrency: number;
  private readonly running = new Map<number, Running>();
  private handler: TaskHandler | undefined;
  private agentId: string | undefined;
  private token: string | undefined;
  private socket: WebSocket | undefined;
  private readonly pending = new Map<number, { resolve: (m: ServerMessage) => void; reject: (err: Error) => void }>();
  private nextRef = 1;
  private stopping = false;
  private readonly stopController = new AbortController();
  private loop: Promise<void> | undefined;
  private slotFreed: () => void = () => {};

  constructor(private readonly client: AgentClient, private readonly options: FleetAgentOptions) {
    super();
    this.concurrency = options.concurrency ?? 1;
    this.agentId = options.id;
    this.token = options.token;
  }

  get id(): string | undefined {
    return this.agentId;
  }

  /** Tasks whose handlers are running now. */
  get inFlight(): number {
    return this.running.size;
  }

  /** Starts working; resolves once the agent is registered and receiving tasks. */
  async work(handler: TaskHandler): Promise<void> {
    if (this.handler) throw new Error('work() was called already');
    this.handler = handler;
    if (!this.agentId || !this.token) await this.register();
    const started = new Promise<void>((resolve, reject) => {
      this.once('connected', () => resolve());
      this.once('fatal', reject);
    });
    this.loop = this.options.transport === 'poll' ? this.pollLoop() : this.socketLoop();
    await started;
  }

  /**
   * Registers, waiting for a server that is not up yet (or restarting) with jittered backoff rather
   * than failing: an agent is often started before, or alongside, its server. A registration whose
   * answer was lost is sent again; the one that was lost goes offline unused.
   */
  private async register(): Promise<void> {
    const { minMs = 250, maxMs = 10_000 } = this.options.reconnect ?? {};
    for (let attempt = 1; ; attempt++) {
      try {
        const { agent, token } = await this.client.registerAgent({
          name: this.options.name,
          capabilities: this.options.capabilities,
          labels: this.options.labels,
          maxConcurrency: this.concurrency,
        });
        this.agentId = agent.id;
        this.token = token;
        return;
      } catch (err) {
        const unavailable = err instanceof FleetApiError ? err.status >= 502 && err.status <= 504 : true;
        if (!unavailable || this.stopping) throw err;
        await this.retryAfter(err, Math.random() * Math.min(maxMs, minMs * 2 ** attempt));
      }
    }
  }

  /** Says that the agent waits and will try again, then waits. */
  private async retryAfter(err: unknown, delayMs: number): Promise<void> {
    this.warn(Object.assign(new Error(`${(err as Error)?.message ?? err}; retrying in ${(delayMs / 1000).toFixed(1)} s`), { cause: err }));
    await sleep(delayMs, this.stopController.signal);
  }

  /**
   * Takes no new work, waits for running handlers (up to `timeoutMs`, default 30 s), then aborts
   * those still running; their tasks fail retryably and go back to the queue.
   */
  async stop(options: { timeoutMs?: number } = {}): Promise<void> {
    if (this.stopping) return this.loop;
    this.stopping = true;
    const all = Promise.all([...this.running.values()].map((r) => r.done));
    const timer = new Promise<void>((r) => setTimeout(r, options.timeoutMs ?? 30_000).unref());
    await Promise.race([all, timer]);
    for (const r of this.running.values()) r.controller.abort(new Error('agent stopping'));
    await all;
    this.stopController.abort();
    this.socket?.close(1000, 'agent stopped');
    await this.loop;
  }

  // ---- WebSocket push ----

  private async socketLoop(): Promise<void> {
    const { minMs = 250, maxMs = 10_000 } = this.options.reconnect ?? {};
    let attempt = 0;
    while (!this.stopping) {
      try {
        await this.openSocket();
        attempt = 0;
      } catch (err) {
        const status = (err as { status?: number }).status;
        if (status === 401) return this.fatal(err as Error);
        // These say the server (or a proxy before it) does not do WebSockets here; a 503 is only a restart.
        if (status !== undefined && NO_WEBSOCKET.has(status) && this.options.transport !== 'ws') return this.pollLoop();
        if (this.stopping) return;
        attempt++;
        await this.retryAfter(err, Math.random() * Math.min(maxMs, minMs * 2 ** attempt));
        continue;
      }
      if (this.stopping) return;
      attempt++;
      await sleep(Math.random() * Math.min(maxMs, minMs * 2 ** attempt), this.stopController.signal);
    }
  }

  /**
   * Resolves when the socket closes after a welcome; rejects when it never got one. A node that
   * cannot be reached, or whose socket drops without a close frame (1006: the process or its machine
   * died), makes the client move on to the next node.
   */
  private openSocket(): Promise<void> {
    const node = this.client.url;
    const url = `${node.replace(/^http/, 'ws')}/v1/agents/${this.agentId}/stream?protocol=${AGENT_PROTOCOL_VERSION}`;
    // Agent messages are small and frequent: deflate would cost more CPU and memory than it saves.
    const socket = new WebSocket(url, { headers: { authorization: `Bearer ${this.token}` }, perMessageDeflate: false });
    return new Promise((resolve, reject) => {
      let welcomed = false;
      socket.once('unexpected-response', (_req, res) => {
        res.resume();
        if (res.statusCode !== undefined && res.statusCode >= 502 && res.statusCode <= 504) this.client.failover(node);
        reject(Object.assign(new Error(`the server refused the WebSocket: HTTP ${res.statusCode}`), { status: res.statusCode }));
      });
      socket.on('error', (err) => {
        if (isNodeFailure(err)) this.client.failover(node);
        if (!welcomed) reject(err);
      });
      socket.on('message', (data) => {
        const message = JSON.parse(data.toString()) as ServerMessage;
        if (message.type === 'welcome') {
          welcomed = true;
          this.socket = socket;
          if (this.stopping) return socket.close(1000, 'agent stopped');
          for (const task of message.leased) this.start(task);
          this.grant(this.concurrency - this.running.size);
          this.emit('connected', { transport: 'ws' });
        } else this.onServerMessage(message);
      });
      socket.once('close', (code, reason) => {
        if (this.socket === socket) this.socket = undefined;
        for (const p of this.pending.values()) p.reject(new Error('disconnected'));
        this.pending.clear();
        if (code === 1006) this.client.failover(node);
        if (!welcomed) return reject(new Error(`closed before the welcome: ${code} ${reason}`));
        this.emit('disconnected', { code, reason: reason.toString() });
        resolve();
      });
    });
  }

  private onServerMessage(message: ServerMessage): void {
    if (message.type === 'tasks') {
      for (const task of message.tasks) this.start(task);
      return;
    }
    if (message.type === 'welcome') return;
    const ref = typeof message.ref === 'number' ? message.ref : undefined;
    const waiter = ref === undefined ? undefined : this.pending.get(ref);
    if (waiter) {
      this.pending.delete(ref!);
      waiter.resolve(message);
    } else if (message.type === 'error') {
      this.warn(FleetApiError.fromWire(message.error));
    }
  }

  private grant(add: number): void {
    if (add > 0 && !this.stopping) this.socket?.send(JSON.stringify({ type: 'credit', add } satisfies AgentMessage));
  }

  /** A request over the socket, answered by its ack; throws when the socket is gone so that the caller uses HTTP. */
  private overSocket(message: Extract<AgentMessage, { ref?: unknown }>): Promise<ServerMessage> {
    const socket = this.socket;
    if (!socket || socket.readyState !== WebSocket.OPEN) return Promise.reject(new Error('not connected'));
    const ref = this.nextRef++;
    return new Promise((resolve, reject) => {
      this.pending.set(ref, { resolve, reject });
      socket.send(JSON.stringify({ ...message, ref }));
    }).then((answer) => {
      const m = answer as ServerMessage;
      if (m.type === 'error') throw FleetApiError.fromWire(m.error);
      return m;
    });
  }

  // ---- long-poll ----

  private async pollLoop(): Promise<void> {
    const heartbeat = setInterval(() => {
      this.client.request('POST', `/v1/agents/${this.agentId}/heartbeat`, undefined, { credential: this.token }).catch((err) => this.warn(err));
    }, POLL_HEARTBEAT_MS);
    this.emit('connected', { transport: 'poll' });
    let attempt = 0;
    try {
      while (!this.stopping) {
        const free = this.concurrency - this.running.size;
        if (free <= 0) {
          await new Promise<void>((resolve) => (this.slotFreed = resolve));
          continue;
        }
        try {
          const { tasks } = await this.client.request<{ tasks: TaskJson[] }>(
            'POST',
            '/v1/tasks/claim',
            { agentId: this.agentId, max: free, waitMs: LONG_POLL_MS },
            // Not repeated by the client: a lost answer may have leased tasks, which go back to the
            // queue when their leases expire; this loop claims again after its own backoff.
            { signal: this.stopController.signal, credential: this.token },
          );
          attempt = 0;
          for (const task of tasks) this.start(task);
        } catch (err) {
          if (this.stopping) return;
          if (err instanceof FleetApiError && err.status === 404) return this.fatal(err);
          attempt++;
          await this.retryAfter(err, Math.random() * Math.min(10_000, 250 * 2 ** attempt));
        }
      }
    } finally {
      clearInterval(heartbeat);
    }
  }

  // ---- running tasks ----

  private start(task: TaskJson): void {
    if (this.running.has(task.id)) return;
    if (this.stopping) {
      // Arrived on the wire after stop(): give it straight back for another agent.
      void this.report(task, { type: 'fail', id: task.id, error: { code: 'AGENT_STOPPING', message: 'the agent is stopping' }, retryable: true });
      return;
    }
    const run: Running = { task, controller: new AbortController(), done: Promise.resolve() };
    this.running.set(task.id, run);
    this.emit('task', task);
    run.done = this.execute(run).finally(() => {
      this.running.delete(task.id);
      this.grant(1);
      this.slotFreed();
    });
  }

  private async execute({ task, controller }: Running): Promise<void> {
    const extendEvery = Math.max(50, Math.floor(task.leaseMs / 2));
    const extender = setInterval(() => void this.extend(task, controller), extendEvery);
    let outcome: AgentMessage & { type: 'complete' | 'fail' };
    const release = (delayMs: number, reason?: string): never => {
      throw new RetryLaterError(delayMs, reason);
    };
    try {
      const result = await this.handler!(task, { signal: controller.signal, release });
      outcome = { type: 'complete', id: task.id, result: result ?? null };
    } catch (err) {
      if (err instanceof RetryLaterError) {
        clearInterval(extender);
        await this.giveBack(task, err);
        return;
      }
      const e = err instanceof Error ? err : new Error(String(err));
      outcome = {
        type: 'fail',
        id: task.id,
        error: { name: e.name, message: e.message },
        retryable: !(err instanceof NonRetryableError),
      };
    } finally {
      clearInterval(extender);
    }
    await this.report(task, outcome);
  }

  /** Releases the task for later (over HTTP), through passing troubles of the server while the lease may still be held. */
  private async giveBack(task: TaskJson, err: RetryLaterError): Promise<void> {
    const leaseLapsesAt = Date.now() + task.leaseMs;
    const body = { agentId: this.agentId, delayMs: Math.max(0, Math.round(err.delayMs)), reason: err.message };
    for (let attempt = 1; ; attempt++) {
      try {
        await this.client.request('POST', `/v1/tasks/${task.id}/release`, body, { credential: this.token, traceparent: task.traceparent });
        return;
      } catch (e) {
        const refused = e instanceof FleetApiError && !TRANSIENT_CODES.has(e.code);
        if (refused || Date.now() >= leaseLapsesAt || (this.stopping && attempt >= REPORT_ATTEMPTS)) {
          this.warn(e);
          return;
        }
        await sleep(Math.random() * Math.min(REPORT_BACKOFF_MAX_MS, 250 * 2 ** attempt));
      }
    }
  }

  private async extend(task: TaskJson, controller: AbortController): Promise<void> {
    try {
      await this.send({ type: 'extend', id: task.id }, `/v1/tasks/${task.id}/extend`, {});
    } catch (err) {
      if (err instanceof FleetApiError && (err.code === 'FLEETD_ERR_LEASE_LOST' || err.code === 'FLEETD_ERR_TASK_STATE' || err.code === 'FLEETD_ERR_NOT_FOUND')) {
        controller.abort(err);
      }
      this.warn(err);
    }
  }

  /**
   * Completes or fails a task, retrying through disconnects and passing troubles of the server (a
   * full disk, a restart, its database away) for as long as the lease could still be held, since
   * the result is lost once it lapses (at most REPORT_ATTEMPTS tries once the agent is stopping);
   * a refusal (lease lost) is final.
   */
  private async report(task: TaskJson, message: AgentMessage & { type: 'complete' | 'fail' }): Promise<void> {
    const { type: _type, id: _id, ...body } = message;
    const leaseLapsesAt = Date.now() + task.leaseMs;
    for (let attempt = 1; ; attempt++) {
      try {
        await this.send(message, `/v1/tasks/${task.id}/${message.type}`, body);
        return;
      } catch (err) {
        const refused = err instanceof FleetApiError && !TRANSIENT_CODES.has(err.code);
        const outOfTime = this.stopping ? attempt >= REPORT_ATTEMPTS : Date.now() >= leaseLapsesAt;
        if (refused || outOfTime) {
          this.warn(err);
          return;
        }
        await sleep(Math.random() * Math.min(REPORT_BACKOFF_MAX_MS, 250 * 2 ** attempt));
      }
    }
  }

  /**
   * Over the socket when it is open, else over HTTP. A node that fails makes the client move to the
   * next one, where report() sends it again: a repeat of one that took effect changes nothing (it is refused).
   */
  private async send(message: Extract<AgentMessage, { ref?: unknown }>, path: string, body: object): Promise<void> {
    try {
      await this.overSocket(message);
    } catch (err) {
      if (err instanceof FleetApiError) throw err;
      // A task's traceparent (set while fleetd traces) puts the report in the task's trace.
      const traceparent = 'id' in message ? this.running.get(message.id)?.task.traceparent : undefined;
      await this.client.request('POST', path, { agentId: this.agentId, ...body }, { credential: this.token, traceparent });
    }
  }

  private fatal(err: Error): void {
    this.stopping = true;
    this.emit('fatal', err);
    this.warn(err);
  }

  /** Errors go to 'error' listeners; with none, to stderr rather than crashing the process as an unheard 'error' would. */
  private warn(err: unknown): void {
    if (this.listenerCount('error') > 0) this.emit('error', err);
    else process.stderr.write(`fleetd agent: ${(err as Error)?.message ?? err}\n`);
  }
}
