import { randomBytes, randomUUID } from 'node:crypto';
import type { AgentCreateParams } from '../store/store.js';
import type { FleetContext } from './context.js';
import { AGENT_TOKEN_PREFIX, hashSecret } from './credentials.js';
import { invalid, notFound } from '../domain/errors.js';
import { RESERVED_CAPABILITY_PREFIXES } from '../domain/requirements.js';
import type { AgentReaper } from './maintenance/agent-reaper.js';
import type { AgentPresence } from './presence.js';
import { lostLeases } from './rules/retry.js';
import type { Agent, AgentStatus, Page } from '../domain/types.js';
import { namespaceVisible, type NamespaceFilter } from '../domain/namespaces.js';

export interface AgentInput {
  name: string;
  capabilities?: string[];
  labels?: Record<string, string>;
  /** Most tasks the agent holds at once. Defaults to 10. */
  maxConcurrency?: number;
}

export interface RegisteredAgent {
  agent: Agent;
  /** The agent's secret, shown once: only its hash is stored. */
  token: string;
}

/** Agents: registration (tokens stored hashed), heartbeats, and removal that releases what they held. */
export class AgentService {
  constructor(
    private readonly ctx: FleetContext,
    private readonly timers: { agents: AgentReaper },
    private readonly presence: AgentPresence,
  ) {}

  /** Registers the agent in `namespace`: for good, it claims and sees that namespace's tasks only. */
  register(input: AgentInput, namespace: string): Promise<RegisteredAgent> {
    return this.registerMany([input], namespace).then(([registered]) => registered);
  }

  /** One transaction for the whole batch, all in one namespace. */
  registerBatch(inputs: AgentInput[], namespace: string): Promise<RegisteredAgent[]> {
    if (inputs.length > this.ctx.config.maxAgentBatch) {
      throw invalid('agents', `a batch holds at most ${this.ctx.config.maxAgentBatch} agents`, { count: inputs.length });
    }
    return this.registerMany(inputs, namespace);
  }

  private async registerMany(inputs: AgentInput[], namespace: string): Promise<RegisteredAgent[]> {
    const now = this.ctx.now();
    const tokens: string[] = [];
    inputs.forEach((input, index) => {
      const reserved = (input.capabilities ?? []).find((c) => RESERVED_CAPABILITY_PREFIXES.some((p) => c.startsWith(p)));
      if (reserved !== undefined) {
        throw invalid('capabilities', `${reserved}: agent:, label: and namespace: are fleetd's own (a task's agentId, the agent's labels, its namespace), not capabilities`, inputs.length > 1 ? { index } : {});
      }
    });
    const params: AgentCreateParams[] = inputs.map((input) => {
      const token = `${AGENT_TOKEN_PREFIX}${randomBytes(24).toString('base64url')}`;
      tokens.push(token);
      return {
        id: randomUUID(),
        namespace,
        name: input.name,
        capabilities: [...new Set(input.capabilities ?? [])],
        labels: input.labels ?? {},
        maxConcurrency: input.maxConcurrency ?? 10,
        tokenHash: hashSecret(token),
        now,
      };
    });
    const agents = await this.ctx.store.agentCreateMany(params);
    for (const agent of agents) this.presence.remember(agent);
    for (const agent of agents) this.ctx.bus.publish('agent.registered', { agent });
    this.timers.agents.poke(now + this.ctx.config.agentStaleMs + 1);
    return agents.map((agent, i) => ({ agent, token: tokens[i] }));
  }

  /** The agent, if it is of one of `namespaces` (all when undefined): one of another namespace is as missing (404). */
  async get(id: string, namespaces?: NamespaceFilter): Promise<Agent> {
    const agent = await this.ctx.store.agentGet({ id });
    if (!agent || !namespaceVisible(namespaces, agent.namespace)) throw notFound('agent', id);
    return agent;
  }

  list(params: { namespaces?: NamespaceFilter; status?: AgentStatus; capability?: string; limit: number; cursor?: string }): Promise<Page<Agent>> {
    return this.ctx.store.agentList(params);
  }

  /** An agent known online is only noted in memory (see presence.ts); a status change is written at once. */
  async heartbeat(id: string): Promise<Agent> {
    return this.heartbeatInMemory(id) ?? this.writeHeartbeat(id, this.ctx.now());
  }

  /**
   * The beat of an agent this node knows online, noted in memory and answered at once, without a
   * promise; undefined when it must be written (heartbeat does).
   */
  heartbeatInMemory(id: string): Agent | undefined {
    return this.presence.beat(id, this.ctx.now());
  }

  /**
   * An agent's socket welcomed: its heartbeat is written at once, not only noted, so that a grace
   * running on another node for its previous socket sees it back (release's `unlessSeenAfter`).
   */
  connected(id: string): Promise<Agent> {
    return this.writeHeartbeat(id, this.ctx.now());
  }

  private async writeHeartbeat(id: string, now: number): Promise<Agent> {
    const result = await this.ctx.store.agentHeartbeat({ id, now });
    if (!result) throw notFound('agent', id);
    this.presence.remember(result.agent);
    if (result.previousStatus !== 'online') this.ctx.bus.publish('agent.online', { agent: result.agent });
    this.timers.agents.poke(now + this.ctx.config.agentStaleMs + 1);
    return result.agent;
  }

  async remove(id: string, namespaces?: NamespaceFilter): Promise<Agent> {
    // A key that reaches some namespaces only reads the agent first: one out of its reach is as missing.
    if (namespaces !== undefined) await this.get(id, namespaces);
    const now = this.ctx.now();
    const released = await this.ctx.store.agentDelete({ id, now, endLease: lostLeases('agent_offline', now) });
    if (!released) throw notFound('agent', id);
    this.ctx.publishRelease(released, 'agent.deleted');
    return released.agent;
  }

  /**
   * The agent's WebSocket grace ran out: it goes offline now, its leased tasks and its locks released,
   * unless a socket of it was welcomed (on any node) after `disconnectedAt`. It comes back with its
   * next heartbeat or claim. Undefined when it was back, or is gone.
   */
  async releaseAfterGrace(id: string, disconnectedAt: number): Promise<Agent | undefined> {
    const now = this.ctx.now();
    const released = await this.ctx.store.agentRelease({ id, now, endLease: lostLeases('agent_offline', now), unlessSeenAfter: disconnectedAt });
    if (!released) return undefined;
    this.ctx.publishRelease(released, 'agent.offline');
    return released.agent;
  }
}
