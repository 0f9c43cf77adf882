import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import WebSocket from 'ws';
import {
  AGENT_PROTOCOL_VERSION,
  type AgentInput,
  type AgentJson,
  type AgentMessage,
  type ServerMessage,
  type TaskBatchItem,
  type TaskBatchResult,
  type TaskInput,
  type TaskJson,
} from './wire.js';
import { FleetApiError, NonRetryableError, RetryLaterError, TaskRevokedError } from './errors.js';
import { fullJitter } from './backoff.js';
import { answerMayBeLost, isNodeFailure } from './connection.js';
import { ActivityReporter, type LogLevel } from './activity.js';

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
  /** What a WebSocket to the server needs beyond its URL: headers with `credential` (and the client's namespace), the authorities to trust. */
  socketOptions(credential: string | undefined): { headers: Record<string, string>; ca?: (string | Buffer)[] };
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
  /**
   * Aborted when the task is cancelled or runs past its execution timeout (the reason is a
   * `TaskRevokedError`), when the lease is lost, or when `stop()` runs out of patience: stop work and throw.
   */
  signal: AbortSignal;
  /**
   * Reports progress from 0 to 1 (a RangeError otherwise), with an optional message. This and the
   * two below only queue: a tick's reports leave as one message per kind, cheap enough per token.
   */
  progress(progress: number, message?: string): void;
  /** Appends a log line to the task (level info unless said). */
  log(message: string, level?: LogLevel): void;
  /** Appends a chunk of output (an LLM's tokens, say) to the task. */
  output(chunk: string): void;
  /** Resolves once everything reported so far has reached fleetd. The task's completion waits for it anyway. */
  flush(): Promise<void>;
  /**
   * Submits child tasks of this task in one batch (all or none), with the client's API key; each
   * gets `parentId` set to this task. Without an idempotency key each is given one made of this
   * task's id, the call's number in this run of the handler and the child's place, so that a
   * handler run again after a crash (same task, same calls) gets the same children back instead
   * of new ones. The answer: the children, in order.
   */
  spawn(children: TaskInput[]): Promise<TaskJson[]>;
  /**
   * Gives the task back for later without spending an attempt (throws a RetryLaterError, so the
   * handler ends here): it returns to the queue after delayMs.
   */
  release(delayMs: number, reason?: string): never;
  /**
   * Reports what the task used (an LLM call's tokens and cost, say). Calls add up over the run (the
   * model is the last one named), and the sum goes with the task's completion, failure or release,
   * where fleetd counts it for the task's type and concurrency key (usage sums, budgets). A negative
   * or non-finite number, or a fractional token count, is a RangeError.
   */
  usage(report: TaskUsage): void;
}

/** What a task used, as `ctx.usage()` takes it and fleetd counts it: every field optional, no negative numbers. */
export type TaskUsage = NonNullable<Extract<TaskBatchItem, { op: 'complete' }>['usage']>;

export type TaskHandler = (task: TaskJson, context: TaskContext) => Promise<unknown> | unknown;

interface Running {
  task: TaskJson;
  /** What ctx.usage() reported so far, sent with the outcome. */
  usage?: TaskUsage;
  controller: AbortController;
  done: Promise<void>;
  activity: ActivityReporter;
  extender?: NodeJS.Timeout;
  /** Set when the server ended the attempt (cancel, timeout): its outcome is not reported. */
  cancelled?: TaskRevokedError;
  /**
   * Its attempt is over: the server ended it (`cancelled`), or an extension found the lease gone (it
   * lapsed, the task went back to the queue). No outcome, extension or release of it goes out.
   */
  retired?: boolean;
  /**
   * The handler is done and its outcome queued, its slot's credit granted: a task of its id pushed
   * now is a new lease of it (released, or failed and retried, back to this agent), unless it is
   * this lease handed again (`sameLease`).
   */
  finished?: boolean;
  /** The handler gave the task back (ctx.release): its next lease has the same attempt number. */
  givenBack?: boolean;
}

/**
 * The task is the lease `run` holds, handed again: a lost claim's tasks, say, by a node that did not
 * see another node hand them over, while the run's outcome is on its way. A new lease of a task
 * counts one more attempt than the one before, but after a release, which gives its attempt back
 * (excluded here), or an operator's retry, which starts the count again (told apart by `claimedAt`).
 */
const sameLease = (run: Running, task: TaskJson): boolean => !run.givenBack && task.attempts === run.task.attempts && task.claimedAt === run.task.claimedAt;

const LONG_POLL_MS = 25_000;
const POLL_HEARTBEAT_MS = 10_000;
const REPORT_ATTEMPTS = 5;
const REPORT_BACKOFF_MAX_MS = 4_000;
/** The longest wait between two tries of a resumed lease's first extension. */
const EXTEND_RETRY_MAX_MS = 1_000;
const NO_WEBSOCKET = new Set([400, 404, 405, 426, 501]);
/** Most items the server takes in one batch (MAX_BATCH_ITEMS). */
const MAX_BATCH_ITEMS = 1_000;
/** Refusals that mean "not now" rather than "no": a completion or failure is reported again after them. */
const TRANSIENT_CODES = new Set([
  'FLEETD_ERR_STORAGE_FULL',
  'FLEETD_ERR_STORE_UNAVAILABLE',
  'FLEETD_ERR_UNAVAILABLE',
  'FLEETD_ERR_SHUTTING_DOWN',
  'FLEETD_ERR_RATE_LIMITED',
]);
/** Whether a report or an extension was refused for good, rather than failed for a passing reason (TRANSIENT_CODES, a connection). */
const isRefusal = (err: unknown): boolean => err instanceof FleetApiError && !TRANSIENT_CODES.has(err.code);
/** How often a running task's lease is extended: twice a lease. */
const extendEveryMs = (task: TaskJson): number => Math.max(50, Math.floor(task.leaseMs / 2));

/** A usage report added to the run's so far, checked as fleetd checks it (so that a bad one fails where it was made). */
function addUsage(sum: TaskUsage | undefined, report: TaskUsage): TaskUsage {
  const next: TaskUsage = { ...sum };
  for (const field of ['inputTokens', 'outputTokens', 'costUsd'] as const) {
    const value = report[field];
    if (value === undefined) continue;
    const whole = field !== 'costUsd';
    if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || (whole && !Number.isInteger(value))) {
      throw new RangeError(`usage.${field} must be a ${whole ? 'whole' : 'finite'} number of at least 0, not ${value}`);
    }
    next[field] = (next[field] ?? 0) + value;
  }
  if (report.model !== undefined) next.model = report.model;
  return next;
}

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
 * Events: `connected` ({ transport }), `disconnected` ({ code, reason }), `task` (task),
 * `cancelled` (task, TaskRevokedError: the server ended its attempt), `error` (err).
 */
export class FleetAgent extends EventEmitter {
  private readonly concurrency: number;
  private readonly running = new Map<number, Running>();
  /** Handlers of cancelled attempts that have not returned yet: they still hold their slot. */
  private readonly cancelledRuns = new Set<Running>();
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
  /** Completions, failures and extensions of this tick, sent together when it ends. */
  private outbox: { item: TaskBatchItem; resolve: () => void; reject: (err: unknown) => void }[] = [];
  private outboxScheduled = false;
  /** Credit freed during this tick, granted in one message when it ends. */
  private creditDue = 0;
  /** Of each list of leases on its way (resumeLeases), the tasks that ended meanwhile: not to start again. */
  private readonly endedWhileResuming = new Set<Set<number>>();

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
    return this.running.size + this.cancelledRuns.size;
  }

  /**
   * Slots whose credit has not gone back: handlers at work, their outcome not queued yet. A slot's
   * credit goes back when its outcome is queued, not when the outcome is answered; a grant made
   * while no socket was open is lost, so a new socket's welcome grants every other slot.
   */
  private get unreturnedSlots(): number {
    let slots = this.cancelledRuns.size;
    for (const run of this.running.values()) if (!run.finished) slots++;
    return slots;
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
        await this.retryAfter(err, fullJitter(attempt, minMs, maxMs));
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
    const runs = [...this.running.values(), ...this.cancelledRuns];
    const all = Promise.all(runs.map((r) => r.done));
    const timer = new Promise<void>((r) => setTimeout(r, options.timeoutMs ?? 30_000).unref());
    await Promise.race([all, timer]);
    for (const r of runs) r.controller.abort(new Error('agent stopping'));
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
        await this.retryAfter(err, fullJitter(attempt, minMs, maxMs));
        continue;
      }
      if (this.stopping) return;
      attempt++;
      await sleep(fullJitter(attempt, minMs, maxMs), this.stopController.signal);
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
    const socket = new WebSocket(url, { perMessageDeflate: false, ...this.client.socketOptions(this.token) });
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
          for (const task of message.leased) this.start(task, true);
          this.grant(this.concurrency - this.unreturnedSlots);
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
    if (message.type === 'cancel') {
      this.cancelRun(message.id, message.code, message.reason);
      return;
    }
    const ref = typeof message.ref === 'number' ? message.ref : undefined;
    const waiter = ref === undefined ? undefined : this.pending.get(ref);
    if (waiter) {
      this.pending.delete(ref!);
      waiter.resolve(message);
    } else if (message.type === 'error') {
      this.warn(FleetApiError.fromWire(message.error));
    }
  }

  /**
   * Credit freed in one tick (a batch of tasks finishing together) goes out as one message: with
   * the tick's outcomes when there are any (see flushOutbox), else on its own.
   */
  private grant(add: number): void {
    if (add <= 0) return;
    if (this.creditDue === 0 && !this.outboxScheduled) setImmediate(() => this.sendCredit());
    this.creditDue += add;
  }

  private sendCredit(): void {
    const due = this.creditDue;
    this.creditDue = 0;
    if (due > 0 && !this.stopping) this.socket?.send(JSON.stringify({ type: 'credit', add: due } satisfies AgentMessage));
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
      // Safe to repeat: a heartbeat whose answer was lost is sent again.
      this.client.request('POST', `/v1/agents/${this.agentId}/heartbeat`, undefined, { credential: this.token, retry: true }).catch((err) => this.warn(err));
    }, POLL_HEARTBEAT_MS);
    // A restarted agent takes back the leases it held, as a socket's welcome hands them over.
    const notResumed = await this.resumeLeases();
    if (notResumed) this.warn(notResumed);
    this.emit('connected', { transport: 'poll' });
    let attempt = 0;
    // A claim answered 503 with outcomeUnknown: the server lost its database connection with the
    // claim on its way, and the claim may have leased tasks all the same. They are taken back once
    // the leases can be read (after the Retry-After wait), on whichever node answers.
    let leasesInDoubt = false;
    try {
      while (!this.stopping) {
        if (leasesInDoubt && !(await this.resumeLeases())) leasesInDoubt = false;
        const free = this.concurrency - this.inFlight;
        if (free <= 0) {
          await new Promise<void>((resolve) => (this.slotFreed = resolve));
          continue;
        }
        try {
          const { tasks } = await this.client.request<{ tasks: TaskJson[] }>(
            'POST',
            '/v1/tasks/claim',
            { agentId: this.agentId, max: free, waitMs: LONG_POLL_MS },
            // Not repeated by the client: a repeat would lease more tasks, while the server may
            // have leased some to the answer that was lost. Those are taken back below.
            { signal: this.stopController.signal, credential: this.token },
          );
          attempt = 0;
          for (const task of tasks) this.start(task);
        } catch (err) {
          if (this.stopping) return;
          if (err instanceof FleetApiError && err.status === 404) return this.fatal(err);
          if (err instanceof FleetApiError && err.details.outcomeUnknown === true) leasesInDoubt = true;
          attempt++;
          // A dropped keep-alive connection, say: once the agent holds what the lost answer leased
          // (rather than waiting for those leases to lapse), nothing is amiss. A second drop in a
          // row is reported, and waited out.
          if (attempt === 1 && answerMayBeLost(err) && !(await this.resumeLeases())) continue;
          await this.retryAfter(err, fullJitter(attempt, 250, 10_000));
        }
      }
    } finally {
      clearInterval(heartbeat);
    }
  }

  /**
   * Starts the tasks leased to this agent that it is not running (GET /v1/agents/:id/leases). A task
   * that ends while the list is on its way is not started again. Answers the error that kept the
   * list away, if one did; a server from before the route (404) has nothing to resume.
   */
  private async resumeLeases(): Promise<Error | undefined> {
    const ended = new Set<number>();
    this.endedWhileResuming.add(ended);
    try {
      const { tasks } = await this.client.request<{ tasks: TaskJson[] }>('GET', `/v1/agents/${this.agentId}/leases`, undefined, {
        signal: this.stopController.signal,
        credential: this.token,
      });
      for (const task of tasks) if (!ended.has(task.id)) this.start(task, true);
      return undefined;
    } catch (err) {
      return this.stopping || (err instanceof FleetApiError && err.status === 404) ? undefined : (err as Error);
    } finally {
      this.endedWhileResuming.delete(ended);
    }
  }

  // ---- running tasks ----

  /**
   * Runs a task leased to this agent. `resumed`: a lease the agent may hold already (a socket's
   * welcome, the leases taken back after a restart), run only if it is not running here; a pushed
   * or claimed task is a new lease, run unless its id's handler is still at work or this is the
   * lease its run holds (`sameLease`).
   */
  private start(task: TaskJson, resumed = false): void {
    let current = this.running.get(task.id);
    if (current && task.attempts > current.task.attempts) {
      // A later attempt of a task still running here: its lease lapsed (the agent cut off past its
      // grace, say) and the task came back to this agent. The earlier run's outcome would be taken
      // for this attempt's: it is dropped, and this lease runs afresh.
      this.loseRun(current, new Error(`task ${task.id} was leased again (attempt ${task.attempts}): the lease of attempt ${current.task.attempts} is gone`));
      current = undefined;
    }
    if (current && (resumed || !current.finished || sameLease(current, task))) {
      // Running here through a restart of the server or a lost answer, its extensions may have
      // failed meanwhile: the lease may be about to lapse.
      if (resumed && !current.finished) void this.extendResumed(current);
      // Handed again over the socket, it took a credit for a slot it does not fill: given back.
      else if (!resumed) this.grant(1);
      return;
    }
    if (this.stopping) {
      // Arrived on the wire after stop(): give it straight back for another agent.
      void this.report(task, { type: 'fail', id: task.id, error: { code: 'AGENT_STOPPING', message: 'the agent is stopping' }, retryable: true });
      return;
    }
    const activity = new ActivityReporter(task.id, (message, path, body) => this.send(message, path, body), (err) => this.warn(err));
    const run: Running = { task, controller: new AbortController(), done: Promise.resolve(), activity };
    this.running.set(task.id, run);
    this.emit('task', task);
    // The socket's credit for the slot goes back as soon as the handler's outcome is queued, with
    // it: the server then completes and hands over the next task in one round trip, not two.
    const finish = () => {
      if (run.finished) return;
      run.finished = true;
      this.grant(1);
    };
    run.done = this.execute(run, finish, resumed).finally(() => {
      if (this.running.get(task.id) === run) this.running.delete(task.id);
      for (const ended of this.endedWhileResuming) ended.add(task.id);
      this.cancelledRuns.delete(run);
      finish();
      this.slotFreed();
    });
  }

  /**
   * The server ended the task's attempt (a cancel, or its execution timeout): the handler's signal
   * aborts with the reason, the lease is no longer extended, and whatever the handler returns is
   * dropped. Its slot stays taken until the handler returns; the task may come again (a timeout
   * is retried), so it no longer counts as running under its id.
   */
  private cancelRun(id: number, code: TaskRevokedError['code'], reason: string): void {
    const run = this.running.get(id);
    if (!run || run.cancelled) return;
    run.cancelled = new TaskRevokedError(id, code, reason);
    this.retire(run);
    this.emit('cancelled', run.task, run.cancelled);
    run.controller.abort(run.cancelled);
  }

  /**
   * A run whose attempt is over while its handler may still go on (cancelled, timed out, its lease
   * lost): no more extensions, its slot held until the handler returns, and its id free for a new
   * lease of the task to run afresh.
   */
  private retire(run: Running): void {
    run.retired = true;
    clearInterval(run.extender);
    if (this.running.get(run.task.id) === run) this.running.delete(run.task.id);
    this.cancelledRuns.add(run);
  }

  /**
   * Runs the handler and reports its outcome; `queued` is called once that outcome (a release too)
   * is on its way. A `resumed` lease was taken before a restart or a reconnect, and may be about to
   * lapse: it is extended at once, not half a lease from now.
   */
  private async execute(run: Running, queued: () => void, resumed: boolean): Promise<void> {
    const { task, controller, activity } = run;
    run.extender = setInterval(() => void this.extend(run), extendEveryMs(task));
    if (resumed) void this.extendResumed(run);
    let outcome: AgentMessage & { type: 'complete' | 'fail' };
    const release = (delayMs: number, reason?: string): never => {
      throw new RetryLaterError(delayMs, reason);
    };
    try {
      let spawnCalls = 0;
      const spawn = async (children: TaskInput[]): Promise<TaskJson[]> => {
        const call = ++spawnCalls;
        const tasks = children.map((child, i) => ({ idempotencyKey: `spawn:${task.id}:${call}:${i}`, ...child, parentId: task.id }));
        const answer = await this.client.request<{ items: { task: TaskJson }[] }>('POST', '/v1/tasks/batch', { tasks }, { retry: true, signal: controller.signal });
        return answer.items.map((item) => item.task);
      };
      const context: TaskContext = {
        signal: controller.signal,
        progress: (progress, message) => activity.progress(progress, message),
        log: (message, level) => activity.log(message, level),
        output: (chunk) => activity.output(chunk),
        flush: () => activity.flush(),
        spawn,
        release,
        usage: (report) => {
          run.usage = addUsage(run.usage, report);
        },
      };
      const result = await this.handler!(task, context);
      outcome = { type: 'complete', id: task.id, result: result ?? null, ...(run.usage ? { usage: run.usage } : {}) };
    } catch (err) {
      if (err instanceof RetryLaterError) {
        clearInterval(run.extender);
        // Its reports go first: once the task is given back, fleetd takes no more of them.
        await activity.flush();
        activity.close();
        if (run.retired) return;
        run.givenBack = true;
        const given = this.giveBack(task, err, run.usage);
        queued();
        await given;
        return;
      }
      const e = err instanceof Error ? err : new Error(String(err));
      outcome = {
        type: 'fail',
        id: task.id,
        error: { name: e.name, message: e.message },
        retryable: !(err instanceof NonRetryableError),
        ...(run.usage ? { usage: run.usage } : {}),
      };
    } finally {
      clearInterval(run.extender);
    }
    // What the handler reported comes before its outcome: once the task is finished, fleetd takes no more of it.
    await activity.flush();
    activity.close();
    // The server ended this attempt, or the lease was lost: a late result would be refused, or (the
    // task retried and leased to this agent again) taken for the new attempt's.
    if (run.retired) return;
    const reported = this.report(task, outcome);
    queued();
    await reported;
  }

  /**
   * Releases the task for later (a `release` message on the socket, else POST /v1/tasks/:id/release),
   * through passing troubles of the server while the lease may still be held.
   */
  private async giveBack(task: TaskJson, err: RetryLaterError, usage: TaskUsage | undefined): Promise<void> {
    const leaseLapsesAt = Date.now() + task.leaseMs;
    const body = { delayMs: Math.max(0, Math.round(err.delayMs)), reason: err.message.slice(0, 1000), ...(usage ? { usage } : {}) };
    let overHttp = false;
    for (let attempt = 1; ; attempt++) {
      try {
        if (overHttp) await this.client.request('POST', `/v1/tasks/${task.id}/release?return=minimal`, { agentId: this.agentId, ...body }, { credential: this.token, traceparent: task.traceparent });
        else await this.send({ type: 'release', id: task.id, ...body }, `/v1/tasks/${task.id}/release?return=minimal`, body);
        return;
      } catch (e) {
        // A node from before the agent stream knew `release` refuses the message: the route it knows.
        if (!overHttp && e instanceof FleetApiError && e.code === 'FLEETD_ERR_VALIDATION' && this.socket) {
          overHttp = true;
          continue;
        }
        const refused = isRefusal(e);
        if (refused || Date.now() >= leaseLapsesAt || (this.stopping && attempt >= REPORT_ATTEMPTS)) {
          this.warn(e);
          return;
        }
        await sleep(fullJitter(attempt, 250, REPORT_BACKOFF_MAX_MS));
      }
    }
  }

  /** Extends the run's lease; false when it failed for a passing reason (a server restarting, a connection lost), and may be tried again. */
  private async extend(run: Running): Promise<boolean> {
    try {
      await this.settle({ op: 'extend', id: run.task.id });
      return true;
    } catch (err) {
      // The outcome went out meanwhile (an extension and a completion of one task cross): the
      // refusal says only that the task is finished.
      if (run.finished || run.retired) return true;
      if (err instanceof FleetApiError && (err.code === 'FLEETD_ERR_CANCELLED' || err.code === 'FLEETD_ERR_TIMEOUT')) {
        // A long-poll agent learns of a cancel or a timeout here, at its next extension.
        const reason = typeof err.details.reason === 'string' ? err.details.reason : err.message;
        this.cancelRun(run.task.id, err.code, reason);
        return true;
      }
      if (err instanceof FleetApiError && (err.code === 'FLEETD_ERR_LEASE_LOST' || err.code === 'FLEETD_ERR_TASK_STATE' || err.code === 'FLEETD_ERR_NOT_FOUND')) {
        this.loseRun(run, err);
      }
      this.warn(err);
      return isRefusal(err);
    }
  }

  /**
   * A resumed lease's first extension. The lease may be about to lapse, so one that fails for a
   * passing reason (the server just restarted and answers 503, say) is tried again shortly, until
   * the regular extension half a lease later is due, rather than left to it.
   */
  private async extendResumed(run: Running): Promise<void> {
    const regularAt = Date.now() + extendEveryMs(run.task);
    for (let attempt = 1; !(await this.extend(run)); attempt++) {
      const delayMs = fullJitter(attempt, 50, EXTEND_RETRY_MAX_MS);
      if (Date.now() + delayMs >= regularAt) return;
      await sleep(delayMs);
      if (run.finished || run.retired) return;
    }
  }

  /** The run's lease is gone: retired as a cancelled run is, and its outcome not reported (it would be refused, or taken for a later attempt's). */
  private loseRun(run: Running, reason: Error): void {
    if (run.retired) return;
    this.retire(run);
    run.controller.abort(reason);
  }

  /**
   * Completes or fails a task, retrying through disconnects and passing troubles of the server (a
   * full disk, a restart, its database away) for as long as the lease could still be held, since
   * the result is lost once it lapses (at most REPORT_ATTEMPTS tries once the agent is stopping);
   * a refusal (lease lost) is final.
   */
  private async report(task: TaskJson, message: AgentMessage & { type: 'complete' | 'fail' }): Promise<void> {
    const { type, ...fields } = message;
    const leaseLapsesAt = Date.now() + task.leaseMs;
    for (let attempt = 1; ; attempt++) {
      try {
        await this.settle({ op: type, ...fields } as TaskBatchItem);
        return;
      } catch (err) {
        const refused = isRefusal(err);
        const outOfTime = this.stopping ? attempt >= REPORT_ATTEMPTS : Date.now() >= leaseLapsesAt;
        if (refused || outOfTime) {
          this.warn(err);
          return;
        }
        await sleep(fullJitter(attempt, 250, REPORT_BACKOFF_MAX_MS));
      }
    }
  }

  /**
   * Queues a completion, failure or extension for the end of this tick, when everything queued in
   * it goes out together: one `batch` message, or one POST /v1/tasks/complete (alone, the single
   * message or route). Each settles with its own item's answer. Nothing waits longer than the tick.
   */
  private settle(item: TaskBatchItem): Promise<void> {
    return new Promise((resolve, reject) => {
      this.outbox.push({ item, resolve, reject });
      if (!this.outboxScheduled) {
        this.outboxScheduled = true;
        setImmediate(() => this.flushOutbox());
      }
    });
  }

  /** The tick's outcomes, then the credit they freed: one write on the socket, so that the server reads them together. */
  private flushOutbox(): void {
    this.outboxScheduled = false;
    // ws keeps its TCP socket private; corked, the two frames leave in one system call.
    const raw = (this.socket as unknown as { _socket?: Duplex } | undefined)?._socket;
    raw?.cork();
    try {
      this.sendOutbox();
      this.sendCredit();
    } finally {
      raw?.uncork();
    }
  }

  private sendOutbox(): void {
    const queued = this.outbox;
    this.outbox = [];
    const batch: typeof queued = [];
    const ids = new Set<number>();
    for (const entry of queued) {
      // The server refuses a task named twice in one batch: a second item for a task (an extension
      // meeting its completion) waits for the next tick.
      if (ids.has(entry.item.id) || batch.length >= MAX_BATCH_ITEMS) this.outbox.push(entry);
      else {
        ids.add(entry.item.id);
        batch.push(entry);
      }
    }
    if (this.outbox.length > 0) {
      this.outboxScheduled = true;
      setImmediate(() => this.flushOutbox());
    }
    if (batch.length === 1) return this.sendOne(batch[0]);
    this.sendBatch(batch.map((entry) => entry.item)).then(
      (results) =>
        batch.forEach((entry, i) => {
          const error = results[i]?.error;
          if (error) entry.reject(FleetApiError.fromWire(error));
          else entry.resolve();
        }),
      (err: unknown) => {
        // A node that does not know batches (an older version) refuses the message or the route:
        // its items go one by one instead.
        const unknown = err instanceof FleetApiError && (err.status === 400 || err.status === 404);
        for (const entry of batch) {
          if (unknown) this.sendOne(entry);
          else entry.reject(err);
        }
      },
    );
  }

  /**
   * One item as its own message or route, which every server version takes. The route's answer is
   * not read: ?return=minimal leaves the payload out of it, where a long prompt would come back at
   * every extension (a server that predates it ignores it).
   */
  private sendOne({ item, resolve, reject }: { item: TaskBatchItem; resolve: () => void; reject: (err: unknown) => void }): void {
    const { op, id, ...body } = item;
    this.send({ type: op, id, ...body } as Extract<AgentMessage, { id: number }>, `/v1/tasks/${id}/${op}?return=minimal`, body).then(resolve, reject);
  }

  /** A batch over the socket when it is open, else over HTTP; one result per item, in order. */
  private async sendBatch(items: TaskBatchItem[]): Promise<TaskBatchResult[]> {
    try {
      const answer = await this.overSocket({ type: 'batch', items });
      if (answer.type === 'batch') return answer.items;
      throw new Error(`the server answered a batch with ${answer.type}`);
    } catch (err) {
      if (err instanceof FleetApiError) throw err;
      const answer = await this.client.request<{ items: TaskBatchResult[] }>('POST', '/v1/tasks/complete', { agentId: this.agentId, items }, { credential: this.token });
      return answer.items;
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
