import { SpanKind } from '@opentelemetry/api';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import type { WebSocket } from 'ws';
import type { FleetdConfig } from '../../config.js';
import type { Logger } from '../../core/context.js';
import { FleetError, isDependencyUnavailable } from '../../domain/errors.js';
import type { DeliveryChannel } from '../../core/delivery.js';
import type { Fleet } from '../../core/fleet.js';
import type { Agent, TaskWithoutPayload, TaskSummary } from '../../domain/types.js';
import { stopOrder } from '../../core/rules/control.js';
import {
  AgentMessageSchema,
  MessageRef,
  CloseCodes,
  type AgentMessage,
  type ServerMessage,
  taskBatchResultJson,
  tasksFrame,
  welcomeFrame,
} from '../../protocol/agent-stream.js';
import { settleBatch } from '../../core/task-batch.js';
import { agentStreamMessages } from '../../metrics/metrics.js';
import { isoOrNull } from '../../domain/wire.js';
import { inSpan } from '../../tracing/tracing.js';
import type { Connections } from './connections.js';
import { Sweep } from './sweep.js';

const checkMessage = TypeCompiler.Compile(AgentMessageSchema);
const checkRef = TypeCompiler.Compile(MessageRef);

/** One connected agent: its socket and its delivery channel, which pushes tasks to it under the credit it grants. */
class AgentSession {
  /** Last time (the fleet's clock) a heartbeat told the store this agent is alive; a claim does too (channel.claimedAt). */
  beatAt: number;
  readonly channel: DeliveryChannel;
  /** The socket's progress, logs and output reports, one after the other: stored in the order sent. */
  reports: Promise<unknown> = Promise.resolve();

  constructor(
    readonly id: string,
    readonly socket: WebSocket,
    agent: Agent,
    gateway: AgentGateway,
  ) {
    this.beatAt = gateway.fleet.now();
    this.channel = gateway.fleet.delivery.openChannel({
      agent,
      send: (tasks) => gateway.sendText(this, tasksFrame(tasks)),
    });
  }

  get lastBeatAt(): number {
    return Math.max(this.beatAt, this.channel.claimedAt);
  }
}

/**
 * The agent side of the WebSocket gateway: authenticated sessions, each with a delivery channel
 * (core/delivery.ts decides what to push and when; the gateway supplies the agent's credit and a
 * send), heartbeats for connected agents, and the disconnect grace period after which an agent's
 * leases and locks are released.
 */
export class AgentGateway {
  private readonly sessions = new Map<string, AgentSession>();
  private readonly graceTimers = new Map<string, NodeJS.Timeout>();
  /** Agents whose socket is between the upgrade and the welcome, with how many such sockets. */
  private readonly opening = new Map<string, number>();
  /** Heartbeats the agents connected here, three times a stale period, a slice at a time. */
  private heartbeater: Sweep<string, AgentSession> | undefined;
  private unsubscribe: (() => void)[] = [];
  private stopping = false;

  constructor(
    readonly fleet: Fleet,
    private readonly config: Readonly<FleetdConfig>,
    private readonly connections: Connections,
    readonly log: Logger,
  ) {}

  get size(): number {
    return this.sessions.size;
  }

  start(): void {
    // Three times a stale period: a connected agent never goes stale (see heartbeat).
    const beatMs = Math.max(1, Math.floor(this.config.agentStaleMs / 3));
    this.heartbeater = new Sweep(this.sessions, beatMs, (_, session) => this.heartbeat(session, beatMs));
    this.heartbeater.start();
    const bus = this.fleet.bus;
    // A cancel or a timeout reaches the agent's socket on whichever node holds it: events come from every node.
    const tellToStop = ({ task }: { task: TaskSummary }) => this.tellToStop(task);
    this.unsubscribe = [
      bus.subscribe('agent.deleted', ({ agent }) => {
        this.sessions.get(agent.id)?.socket.close(CloseCodes.AGENT_DELETED, 'agent deleted');
      }),
      bus.subscribe('task.cancelled', tellToStop),
      bus.subscribe('task.failed', tellToStop),
      bus.subscribe('task.dead', tellToStop),
    ];
  }

  /** Tells the agent connected here that held a task which was cancelled or timed out to stop working on it. */
  private tellToStop(task: TaskSummary): void {
    const order = stopOrder(task);
    const session = order && this.sessions.get(order.agentId);
    if (!order || !session) return;
    this.send(session, { type: 'cancel', id: task.id, code: order.code, reason: order.reason });
  }

  /** On shutdown: no grace timers run, so that leases survive a restart and the reaper decides later. */
  stop(): void {
    this.stopping = true;
    this.heartbeater?.stop();
    for (const off of this.unsubscribe) off();
    this.unsubscribe = [];
    for (const timer of this.graceTimers.values()) clearTimeout(timer);
    this.graceTimers.clear();
  }

  /** False when the socket is closing or was cut off as too slow: the message was not sent. */
  send(session: AgentSession, message: ServerMessage): boolean {
    return this.sendText(session, JSON.stringify(message));
  }

  /** A message already written as text (tasksFrame, welcomeFrame). */
  sendText(session: AgentSession, text: string): boolean {
    return this.connections.send(session.socket, text);
  }

  /** A socket whose credential was checked before the upgrade; `owner` is who its connection counts against. */
  async open(agentId: string, socket: WebSocket, owner: string): Promise<void> {
    if (!this.connections.admit(socket, owner)) return;
    this.opening.set(agentId, (this.opening.get(agentId) ?? 0) + 1);
    try {
      await this.welcome(agentId, socket);
    } finally {
      const left = this.opening.get(agentId)! - 1;
      if (left > 0) this.opening.set(agentId, left);
      else {
        this.opening.delete(agentId);
        // A socket that ended before its welcome wrote the agent seen: its grace counts from now.
        if (!this.sessions.has(agentId) && this.graceTimers.has(agentId)) this.startGrace(agentId, this.fleet.now());
      }
    }
  }

  private async welcome(agentId: string, socket: WebSocket): Promise<void> {
    let agent;
    try {
      // Written, not only noted: a grace running out now on another node leaves this agent's leases
      // be, and a release that came first has ended them before the list below reads them.
      agent = await this.fleet.agents.connected(agentId);
    } catch (err) {
      if (!isDependencyUnavailable(err)) throw err;
      // Closed with a reason rather than dropped: the SDK reconnects after its backoff.
      socket.close(CloseCodes.UNAVAILABLE, err.message.slice(0, 120));
      return;
    }
    if (socket.readyState !== socket.OPEN) return;
    const previous = this.sessions.get(agentId);
    const session = new AgentSession(agentId, socket, agent, this);
    this.sessions.set(agentId, session);
    if (previous) {
      previous.channel.close();
      previous.socket.close(CloseCodes.REPLACED, 'replaced by a newer connection');
    }
    clearTimeout(this.graceTimers.get(agentId));
    this.graceTimers.delete(agentId);
    socket.once('close', () => this.onClose(session));
    const leased = await this.fleet.delivery.handAllLeases(agentId);
    // The agent speaks only after the welcome, so nothing is missed by listening from here.
    this.sendText(session, welcomeFrame(agent, leased));
    socket.on('message', (data, isBinary) => {
      // A message that fails in a way no answer covers must cost its socket nothing more, never the process.
      void inSpan('WS agent message', { kind: SpanKind.SERVER, attributes: { 'fleetd.agent.id': session.id } }, () => this.onMessage(session, data.toString(), isBinary)).catch(
        (err: unknown) => this.log.error({ err, agentId: session.id }, 'agent message failed'),
      );
    });
  }

  private onClose(session: AgentSession): void {
    session.channel.close();
    if (this.sessions.get(session.id) !== session) return;
    this.sessions.delete(session.id);
    this.startGrace(session.id, this.fleet.now());
  }

  /**
   * After the grace the agent's leases and locks are released, unless it is back, here or on another
   * node. An agent whose new socket is still being welcomed here gets another grace: releasing now
   * would take back the leases its welcome is about to hand it; if that socket fails, a grace from
   * then releases them.
   */
  private startGrace(agentId: string, disconnectedAt: number): void {
    if (this.stopping) return;
    clearTimeout(this.graceTimers.get(agentId));
    const timer = setTimeout(() => {
      this.graceTimers.delete(agentId);
      if (this.sessions.has(agentId)) return;
      if (this.opening.has(agentId)) return this.startGrace(agentId, disconnectedAt);
      this.fleet.agents.releaseAfterGrace(agentId, disconnectedAt).catch((err: unknown) => this.log.error({ err, agentId }, 'release after grace failed'));
    }, this.config.agentDisconnectGraceMs);
    timer.unref();
    this.graceTimers.set(agentId, timer);
  }

  private async onMessage(session: AgentSession, text: string, isBinary: boolean): Promise<void> {
    let message: AgentMessage;
    try {
      const parsed: unknown = isBinary ? undefined : JSON.parse(text);
      if (!checkMessage.Check(parsed)) {
        const first = checkMessage.Errors(parsed).First();
        const where = first?.path || '/';
        // The ref is echoed only when it is one: an arbitrary value (10,000 levels deep, say) would
        // be the sender's to make fleetd serialise.
        const ref = (parsed as { ref?: unknown } | null | undefined)?.ref;
        throw new FleetError('FLEETD_ERR_VALIDATION', `message${where.replaceAll('/', '.')}: ${first?.message ?? 'is not a JSON text message'}`, {
          field: `message${where.replaceAll('/', '.')}`,
          ...(checkRef.Check(ref) ? { ref } : {}),
        });
      }
      message = parsed;
    } catch (err) {
      const error = err instanceof FleetError ? err : new FleetError('FLEETD_ERR_MALFORMED_JSON', 'the message is not valid JSON');
      this.send(session, { type: 'error', error: error.toJSON().error });
      return;
    }
    const ref = 'ref' in message ? message.ref : undefined;
    agentStreamMessages.inc({ type: message.type });
    try {
      switch (message.type) {
        case 'credit':
          session.channel.addCredit(message.add);
          return;
        case 'heartbeat':
          await this.fleet.agents.heartbeat(session.id);
          session.beatAt = this.fleet.now();
          this.send(session, { type: 'ack', ref });
          return;
        case 'complete':
          return this.ack(session, ref, await this.fleet.tasks.complete({ id: message.id, agentId: session.id, result: message.result, usage: message.usage }));
        case 'fail':
          return this.ack(
            session,
            ref,
            await this.fleet.tasks.fail({ id: message.id, agentId: session.id, error: message.error, retryable: message.retryable, usage: message.usage }),
          );
        case 'release':
          return this.ack(
            session,
            ref,
            await this.fleet.tasks.release({ id: message.id, agentId: session.id, delayMs: message.delayMs, reason: message.reason, usage: message.usage }),
          );
        case 'extend':
          return this.ack(session, ref, await this.fleet.tasks.extend({ id: message.id, agentId: session.id, leaseMs: message.leaseMs }));
        case 'batch': {
          const outcomes = await settleBatch(this.fleet.tasks, this.log, session.id, message.items);
          this.send(session, { type: 'batch', ref, items: outcomes.map(taskBatchResultJson) });
          return;
        }
        case 'progress':
          return this.ackActivity(session, ref, message.id, await this.inTurn(session, () => this.fleet.activity.progress({ id: message.id, agentId: session.id, progress: message.progress, message: message.message })));
        case 'logs':
          return this.ackActivity(session, ref, message.id, await this.inTurn(session, () => this.fleet.activity.logs({ id: message.id, agentId: session.id, lines: message.lines })));
        case 'output':
          return this.ackActivity(session, ref, message.id, await this.inTurn(session, () => this.fleet.activity.output({ id: message.id, agentId: session.id, text: message.text })));
      }
    } catch (err) {
      if (!(err instanceof FleetError)) this.log.error({ err, agentId: session.id }, 'agent message failed');
      const error = err instanceof FleetError ? err : new FleetError('FLEETD_ERR_INTERNAL', 'internal error; it has been logged');
      this.send(session, { type: 'error', ref, error: error.toJSON().error });
    }
  }

  private ack(session: AgentSession, ref: string | number | undefined, task: TaskWithoutPayload): void {
    this.send(session, { type: 'ack', ref, id: task.id, status: task.status, leaseExpiresAt: isoOrNull(task.leaseExpiresAt) });
  }

  /**
   * Runs a report after the socket's previous ones: on PostgreSQL concurrent writes commit in any
   * order, and an agent that sends without waiting for acks still expects its lines in order.
   */
  private inTurn<T>(session: AgentSession, report: () => Promise<T>): Promise<T> {
    const turn = session.reports.then(report, report);
    session.reports = turn.catch(() => {});
    return turn;
  }

  private ackActivity(session: AgentSession, ref: string | number | undefined, id: number, entries: { seq: number }[]): void {
    this.send(session, { type: 'ack', ref, id, lastSeq: entries[entries.length - 1].seq });
  }

  /**
   * Connected agents stay online without sending anything: a beat each, kept in memory
   * (core/presence.ts), unless it beat or claimed in the last half period. The sweep visits each
   * about once a period, a third of agentStaleMs, so its last beat is about one and a half periods
   * old at the most, and it never goes stale.
   */
  private heartbeat(session: AgentSession, beatMs: number): void {
    const now = this.fleet.now();
    if (session.lastBeatAt > now - beatMs / 2) return;
    session.beatAt = now;
    this.fleet.agents.heartbeat(session.id).catch((err: unknown) => {
      if (!(err instanceof FleetError)) this.log.error({ err, agentId: session.id }, 'heartbeat failed');
    });
  }
}
