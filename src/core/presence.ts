import type { Agent } from '../domain/types.js';
import type { FleetContext } from './context.js';

/**
 * Heartbeats that do not write. An agent this node knows to be online in the store is only noted
 * in memory when it beats; every `flushMs` the times seen reach the store in one write for all
 * agents together (`agentTouchMany`). A beat that changes the agent's status (stale or offline
 * back to online, an agent this node has not seen) is written at once by the caller, which then
 * tells presence the agent is online.
 *
 * The store's last-seen times lag by up to `flushMs`, which is at most a quarter of agentStaleMs;
 * the reaper flushes before it marks anyone stale, so this node's agents are never marked stale for
 * beats still in memory. What a crash loses (at most one interval of beats) is made good by the
 * reaper's grace after a start: no agent goes stale before a full stale interval has passed.
 */
export class AgentPresence {
  /** Agents known online in the store, as last written, by id. */
  private readonly online = new Map<string, Agent>();
  /** The latest beat of each agent since the last flush. */
  private seen = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;
  private unsubscribe: (() => void)[] = [];
  readonly flushMs: number;

  constructor(private readonly ctx: FleetContext) {
    // setInterval takes at most 2^31 − 1 ms (a longer one fires at once, every millisecond).
    this.flushMs = Math.max(1, Math.min(ctx.config.agentSeenFlushMs, Math.floor(ctx.config.agentStaleMs / 4), 2 ** 31 - 1));
  }

  /** Notes a beat of an agent known online, and answers it as the store will hold it; undefined when the beat must be written. */
  beat(id: string, now: number): Agent | undefined {
    const agent = this.online.get(id);
    if (!agent) return undefined;
    const seen = Math.max(this.seen.get(id) ?? now, now);
    this.seen.set(id, seen);
    return { ...agent, lastHeartbeatAt: seen };
  }

  /** The agent is online in the store as of this write: its next beats stay in memory. */
  remember(agent: Agent): void {
    if (agent.status === 'online') this.online.set(agent.id, agent);
  }

  /** The agent's status changed elsewhere: its next beat is written. */
  forget(id: string): void {
    this.online.delete(id);
    this.seen.delete(id);
  }

  /** How many agents this node holds in memory (for tests and the soak). */
  get size(): number {
    return this.online.size;
  }

  start(): void {
    const { bus } = this.ctx;
    this.unsubscribe.push(
      bus.subscribe('agent.stale', ({ agentId }) => this.forget(agentId)),
      bus.subscribe('agent.offline', ({ agent }) => this.forget(agent.id)),
      bus.subscribe('agent.deleted', ({ agent }) => this.forget(agent.id)),
    );
    this.timer = setInterval(() => void this.flush().catch((err: unknown) => this.ctx.onMaintenanceError(err, 'agent-presence')), this.flushMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    for (const off of this.unsubscribe) off();
    this.unsubscribe = [];
  }

  /**
   * Writes the times seen since the last flush, in one write. Agents the store no longer has online
   * (another node marked them stale, they were released) are forgotten, so that their next beat is
   * written and brings them back with an `agent.online`. Agents not seen for a stale interval are
   * forgotten too: memory holds only agents that beat.
   */
  flush(): Promise<void> {
    this.flushing ??= this.write().finally(() => (this.flushing = undefined));
    return this.flushing;
  }

  private async write(): Promise<void> {
    const now = this.ctx.now();
    for (const [id, agent] of this.online) {
      if (!this.seen.has(id) && agent.lastHeartbeatAt < now - this.ctx.config.agentStaleMs) this.online.delete(id);
    }
    if (this.seen.size === 0) return;
    const seen = this.seen;
    this.seen = new Map();
    let untouched: string[];
    try {
      untouched = await this.ctx.store.agentTouchMany({ seen: [...seen].map(([id, at]) => ({ id, at })) });
    } catch (err) {
      // Not written: kept for the next flush, unless a newer beat came meanwhile.
      for (const [id, at] of seen) if (!this.seen.has(id) && this.online.has(id)) this.seen.set(id, at);
      throw err;
    }
    for (const [id, at] of seen) {
      const agent = this.online.get(id);
      if (agent) this.online.set(id, { ...agent, lastHeartbeatAt: Math.max(agent.lastHeartbeatAt, at) });
    }
    for (const id of untouched) this.forget(id);
  }
}
