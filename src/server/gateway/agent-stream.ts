import { TypeCompiler } from '@sinclair/typebox/compiler';
import type { WebSocket } from 'ws';
import type { FleetdConfig } from '../../config.js';
import type { Logger } from '../../core/context.js';
import { FleetError, isDependencyUnavailable } from '../../core/errors.js';
import type { ClaimWaiter, WakeReason } from '../../core/claim-waiters.js';
import type { Fleet } from '../../core/fleet.js';
import type { Task } from '../../core/types.js';
import {
  AGENT_PROTOCOL_VERSION,
  AgentMessageSchema,
  MessageRef,
  CloseCodes,
  type AgentMessage,
  type ServerMessage,
} from '../../protocol/agent-stream.js';
import { agentJson, taskJson } from '../schemas.js';
import type { Connections } from './connections.js';

const checkMessage = TypeCompiler.Compile(AgentMessageSchema);
const checkRef = TypeCompiler.Compile(MessageRef);

/** One connected agent: its socket, the credit it granted, and the persistent claim waiter that pushes to it. */
class AgentSession {
  /** Tasks it may still be sent. */
  credit = 0;
  closed = false;
  private pumping = false;
  private again = false;
  /** The agent holds maxConcurrency tasks: it sleeps through new tasks until one of its leases ends. */
  private full = false;
  /** What the last wake-up counted this session for, handed on if the claim takes other tasks. */
  private reason: WakeReason | undefined;
  private removeWaiter: () => void = () => {};
  /** Last time (performance.now) a claim or heartbeat told the store this agent is alive. */
  beatAt = performance.now();

  constructor(
    readonly id: string,
    readonly socket: WebSocket,
    private readonly capabilities: ReadonlySet<string>,
    private readonly maxConcurrency: number,
    private readonly gateway: AgentGateway,
  ) {}

  /** Registers with the claim waiters: woken whenever tasks it can do appear, while it has credit. */
  listen(): void {
    if (this.closed) return;
    const waiter: ClaimWaiter = {
      agentId: this.id,
      capabilities: this.capabilities,
      want: () => (this.closed || this.full ? 0 : this.credit),
      wake: (reason) => {
        if (reason) this.reason = reason;
        else this.full = false;
        // Go to the back of the line, so that work spreads over agents instead of filling the first.
        this.removeWaiter();
        this.removeWaiter = this.gateway.fleet.waiters.add(waiter);
        void this.pump();
      },
    };
    this.removeWaiter = this.gateway.fleet.waiters.add(waiter);
  }

  close(): void {
    this.closed = true;
    this.removeWaiter();
  }

  /**
   * Credit past the agent's maxConcurrency is not kept: the store would never lease that many, and a
   * waiter wanting more than it can hold is counted for tasks it must then hand on to others.
   */
  grant(add: number): void {
    this.credit = Math.min(this.credit + add, this.maxConcurrency);
    void this.pump();
  }

  /**
   * Claims as many ready tasks as the credit allows and sends them. Runs one claim at a time; a
   * wake-up during a claim, or tasks announced while it was in flight, make it look again.
   */
  async pump(): Promise<void> {
    if (this.pumping) {
      this.again = true;
      return;
    }
    this.pumping = true;
    try {
      do {
        this.again = false;
        if (this.closed || this.credit <= 0) break;
        const generation = this.gateway.fleet.waiters.generation;
        const reason = this.reason;
        this.reason = undefined;
        const { tasks, room } = await this.gateway.fleet.tasks.claimReady(this.id, this.credit, reason);
        this.full = room <= 0;
        this.beatAt = performance.now();
        // Tasks leased to a socket that closed meanwhile stay leased: a reconnect resumes them, the grace releases them.
        if (tasks.length > 0) {
          this.credit -= tasks.length;
          this.gateway.send(this, { type: 'tasks', tasks: tasks.map(taskJson) });
        } else if (this.gateway.fleet.waiters.generation !== generation) this.again = true;
      } while (this.again);
    } catch (err) {
      // During a dependency's outage the wake-up is not lost: the store wakes every waiter for what
      // is queued once its connections work again.
      if (!isDependencyUnavailable(err)) this.gateway.log.error({ err, agentId: this.id }, 'push to agent failed');
    } finally {
      this.pumping = false;
    }
  }
}

/**
 * The agent side of the WebSocket gateway: authenticated sessions that tasks are pushed to under
 * credit, heartbeats for connected agents, and the disconnect grace period after which an agent's
 * leases and locks are released.
 */
export class AgentGateway {
  private readonly sessions = new Map<string, AgentSession>();
  private readonly graceTimers = new Map<string, NodeJS.Timeout>();
  private heartbeater: NodeJS.Timeout | undefined;
  private unsubscribe: () => void = () => {};
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
    // Twice per stale period: a connected agent never goes stale, at the fewest writes that guarantee it.
    const beatMs = Math.max(1, Math.floor(this.config.agentStaleMs / 2));
    this.heartbeater = setInterval(() => this.heartbeatAll(beatMs), beatMs);
    this.heartbeater.unref();
    this.unsubscribe = this.fleet.bus.subscribe('agent.deleted', ({ agent }) => {
      this.sessions.get(agent.id)?.socket.close(CloseCodes.AGENT_DELETED, 'agent deleted');
    });
  }

  /** On shutdown: no grace timers run, so that leases survive a restart and the reaper decides later. */
  stop(): void {
    this.stopping = true;
    clearInterval(this.heartbeater);
    this.unsubscribe();
    for (const timer of this.graceTimers.values()) clearTimeout(timer);
    this.graceTimers.clear();
  }

  send(session: AgentSession, message: ServerMessage): void {
    this.connections.send(session.socket, JSON.stringify(message));
  }

  /** A socket whose credential was checked before the upgrade; `owner` is who its connection counts against. */
  async open(agentId: string, socket: WebSocket, owner: string): Promise<void> {
    if (!this.connections.admit(socket, owner)) return;
    let agent;
    try {
      agent = await this.fleet.agents.heartbeat(agentId);
    } catch (err) {
      if (!isDependencyUnavailable(err)) throw err;
      // Closed with a reason rather than dropped: the SDK reconnects after its backoff.
      socket.close(CloseCodes.UNAVAILABLE, err.message.slice(0, 120));
      return;
    }
    if (socket.readyState !== socket.OPEN) return;
    const previous = this.sessions.get(agentId);
    const session = new AgentSession(agentId, socket, new Set(agent.capabilities), agent.maxConcurrency, this);
    this.sessions.set(agentId, session);
    if (previous) {
      previous.close();
      previous.socket.close(CloseCodes.REPLACED, 'replaced by a newer connection');
    }
    const grace = this.graceTimers.get(agentId);
    if (grace) {
      clearTimeout(grace);
      this.graceTimers.delete(agentId);
    }
    socket.once('close', () => this.onClose(session));
    const leased = await this.fleet.tasks.list({ agentId, status: 'leased', limit: 1000 });
    // The agent speaks only after the welcome, so nothing is missed by listening from here.
    this.send(session, { type: 'welcome', protocol: AGENT_PROTOCOL_VERSION, agent: agentJson(agent), leased: leased.items.map(taskJson) });
    socket.on('message', (data, isBinary) => {
      // A message that fails in a way no answer covers must cost its socket nothing more, never the process.
      this.onMessage(session, data.toString(), isBinary).catch((err: unknown) => this.log.error({ err, agentId: session.id }, 'agent message failed'));
    });
    session.listen();
  }

  private onClose(session: AgentSession): void {
    session.close();
    if (this.sessions.get(session.id) !== session) return;
    this.sessions.delete(session.id);
    if (this.stopping) return;
    const timer = setTimeout(() => {
      this.graceTimers.delete(session.id);
      this.fleet.agents.release(session.id).catch((err: unknown) => {
        if (!(err instanceof FleetError && err.code === 'FLEETD_ERR_NOT_FOUND')) this.log.error({ err, agentId: session.id }, 'release after grace failed');
      });
    }, this.config.agentDisconnectGraceMs);
    timer.unref();
    this.graceTimers.set(session.id, timer);
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
    try {
      switch (message.type) {
        case 'credit':
          session.grant(message.add);
          return;
        case 'heartbeat':
          await this.fleet.agents.heartbeat(session.id);
          session.beatAt = performance.now();
          this.send(session, { type: 'ack', ref });
          return;
        case 'complete':
          return this.ack(session, ref, await this.fleet.tasks.complete({ id: message.id, agentId: session.id, result: message.result }));
        case 'fail':
          return this.ack(
            session,
            ref,
            await this.fleet.tasks.fail({ id: message.id, agentId: session.id, error: message.error, retryable: message.retryable }),
          );
        case 'extend':
          return this.ack(session, ref, await this.fleet.tasks.extend({ id: message.id, agentId: session.id, leaseMs: message.leaseMs }));
      }
    } catch (err) {
      if (!(err instanceof FleetError)) this.log.error({ err, agentId: session.id }, 'agent message failed');
      const error = err instanceof FleetError ? err : new FleetError('FLEETD_ERR_INTERNAL', 'internal error; it has been logged');
      this.send(session, { type: 'error', ref, error: error.toJSON().error });
    }
  }

  private ack(session: AgentSession, ref: string | number | undefined, task: Task): void {
    const leaseExpiresAt = task.leaseExpiresAt === null ? null : new Date(task.leaseExpiresAt).toISOString();
    this.send(session, { type: 'ack', ref, id: task.id, status: task.status, leaseExpiresAt });
  }

  /** Connected agents stay online without sending anything; an agent that claimed recently needs no extra write. */
  private heartbeatAll(beatMs: number): void {
    const due = performance.now() - beatMs;
    for (const session of this.sessions.values()) {
      if (session.beatAt > due) continue;
      session.beatAt = performance.now();
      this.fleet.agents.heartbeat(session.id).catch((err: unknown) => {
        if (!(err instanceof FleetError)) this.log.error({ err, agentId: session.id }, 'heartbeat failed');
      });
    }
  }
}
