import type { Agent } from '../domain/types.js';
import type { FleetContext } from './context.js';

/**
 * Agents a write of last-seen times holds at most. On SQLite a write holds the event loop for as
 * long as it runs: 10,000 agents' times in one took 30-38 ms, every task in flight waiting; in
 * slices of 500, each about 2 ms, the requests of the meantime go between them.
 */
const FLUSH_SLICE = 500;

/**
 * Heartbeats that do not write. An agent this node knows to be online in the store is only noted
 * in memory when it beats; every `flushMs` the times seen reach the store together, in writes of
 * up to FLUSH_SLICE agents (`agentTouchMany`). A beat that changes the agent's status (stale or offline
 * back to online, an agent this node has not seen) is written at once by the caller, which then
 * tells presence the agent is online.
 *
 * The store's last-seen times lag by up to `flushMs`, which is at most a quarter of agentStaleMs;
 * the reaper flushes before it marks anyone stale, so this node's agents are never marked stale for
 * beats still in memory. What a crash loses (at most one interval of beats) is made good by the
 * reaper's grace after a start: no agent goes stale before a full stale interval has passed.
 */
export class AgentPresence {
  /**
   * Agents known online in the store, by id: each as last written, with its latest beat since the
   * last flush (undefined: none). One map, so that a beat costs one lookup.
   */
  private readonly online = new Map<string, { agent: Agent; seen: number | undefined }>();
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;
  /** The flush to run once the one under way is done, shared by whoever asks meanwhile. */
  private flushAgain: Promise<void> | undefined;
  private unsubscribe: (() => void)[] = [];
  readonly flushMs: number;

  constructor(private readonly ctx: FleetContext) {
    // setInterval takes at most 2^31 − 1 ms (a longer one fires at once, every millisecond).
    this.flushMs = Math.max(1, Math.min(ctx.config.agentSeenFlushMs, Math.floor(ctx.config.agentStaleMs / 4), 2 ** 31 - 1));
  }

  /** Notes a beat of an agent known online, and answers it as the store will hold it; undefined when the beat must be written. */
  beat(id: string, now: number): Agent | undefined {
    const entry = this.online.get(id);
    if (!entry) return undefined;
    entry.seen = Math.max(entry.seen ?? now, now);
    return { ...entry.agent, lastHeartbeatAt: entry.seen };
  }

  /** The agent is online in the store as of this write: its next beats stay in memory. */
  remember(agent: Agent): void {
    if (agent.status !== 'online') return;
    const entry = this.online.get(agent.id);
    if (entry) entry.agent = agent;
    else this.online.set(agent.id, { agent, seen: undefined });
  }

  /** The agent's status changed elsewhere: its next beat is written. */
  forget(id: string): void {
    this.online.delete(id);
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
   * Writes the times seen since the last flush, a slice of agents a write (a flush asked for while
   * one is under way runs after it, for what came since). Agents the store no longer
   * has online (another node marked them stale, they were released) are forgotten, so that their
   * next beat is written and brings them back with an `agent.online`. Agents not seen for a stale
   * interval are forgotten too: memory holds only agents that beat.
   */
  flush(): Promise<void> {
    if (this.flushing) {
      // The flush under way took the beats held when it began: one more after it writes those
      // noted since, which a caller (the reaper, shutdown) counts on being written.
      this.flushAgain ??= this.flushing
        .catch(() => {})
        .then(() => {
          this.flushAgain = undefined;
          return this.flush();
        });
      return this.flushAgain;
    }
    this.flushing = this.write().finally(() => (this.flushing = undefined));
    return this.flushing;
  }

  private async write(): Promise<void> {
    const now = this.ctx.now();
    const seen: { id: string; at: number }[] = [];
    for (const [id, entry] of this.online) {
      if (entry.seen !== undefined) seen.push({ id, at: entry.seen });
      else if (entry.agent.lastHeartbeatAt < now - this.ctx.config.agentStaleMs) this.online.delete(id);
      entry.seen = undefined;
    }
    for (let from = 0; from < seen.length; from += FLUSH_SLICE) {
      // A slice a turn of the event loop: on SQLite a write made as the last one's callers resume
      // would join the group committed in that same turn (GroupCommit's chain).
      if (from > 0) await new Promise((resolve) => setImmediate(resolve));
      const slice = seen.slice(from, from + FLUSH_SLICE);
      let untouched: string[];
      try {
        untouched = await this.ctx.store.agentTouchMany({ seen: slice });
      } catch (err) {
        // Not written, this slice and those after it: kept for the next flush, unless a newer beat came meanwhile.
        for (const { id, at } of seen.slice(from)) {
          const entry = this.online.get(id);
          if (entry && entry.seen === undefined) entry.seen = at;
        }
        throw err;
      }
      for (const { id, at } of slice) {
        const entry = this.online.get(id);
        if (entry) entry.agent = { ...entry.agent, lastHeartbeatAt: Math.max(entry.agent.lastHeartbeatAt, at) };
      }
      for (const id of untouched) this.forget(id);
    }
  }
}
