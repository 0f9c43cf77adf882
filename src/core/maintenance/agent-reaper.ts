import type { FleetContext } from '../context.js';
import type { AgentPresence } from '../presence.js';
import { lostLeases } from '../rules/retry.js';
import { DeadlineService } from './deadline-service.js';

/**
 * Marks agents stale when they miss heartbeats, and takes them offline after the longer grace:
 * their leased tasks go back to the queue and their locks are released.
 */
export class AgentReaper extends DeadlineService {
  private startedAt = -Infinity;

  constructor(
    private readonly ctx: FleetContext,
    private readonly presence: AgentPresence,
  ) {
    super('agent-reaper', ctx.now, ctx.maintenance.maxSleepMs, ctx.onMaintenanceError);
  }

  /**
   * After a start, every agent has a full stale interval to show up: heartbeats that were still in
   * a crashed node's memory, or that could not arrive while it was down, take no agent stale or offline.
   */
  override start(): void {
    this.startedAt = this.now();
    super.start();
  }

  async runOnce(now: number): Promise<{ more: boolean; next: number | null }> {
    const { store, config } = this.ctx;
    const graceEnds = this.startedAt + config.agentStaleMs;
    if (now < graceEnds) return { more: false, next: graceEnds };
    // Beats this node holds in memory reach the store before anyone is judged by it.
    await this.presence.flush();
    const batch = this.ctx.maintenance.batchSize;
    const stale = await store.agentMarkStale({ staleBefore: now - config.agentStaleMs, now, limit: batch });
    for (const agentId of stale) this.ctx.bus.publish('agent.stale', { agentId });
    const offline = await store.agentReapOffline({ offlineBefore: now - config.agentOfflineMs, now, limit: batch, endLease: lostLeases('agent_offline', now) });
    for (const released of offline) this.ctx.publishRelease(released, 'agent.offline');
    const [oldestOnline, oldestStale] = await Promise.all([
      store.agentOldestHeartbeat({ status: 'online' }),
      store.agentOldestHeartbeat({ status: 'stale' }),
    ]);
    const deadlines = [
      oldestOnline === null ? Infinity : oldestOnline + config.agentStaleMs,
      oldestStale === null ? Infinity : oldestStale + config.agentOfflineMs,
    ];
    const next = Math.min(...deadlines);
    return { more: stale.length === batch || offline.length === batch, next: next === Infinity ? null : next + 1 };
  }
}
