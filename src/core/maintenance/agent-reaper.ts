import type { FleetContext } from '../context.js';
import { lostLeases } from '../rules/retry.js';
import { DeadlineService } from './deadline-service.js';

/**
 * Marks agents stale when they miss heartbeats, and takes them offline after the longer grace:
 * their leased tasks go back to the queue and their locks are released.
 */
export class AgentReaper extends DeadlineService {
  constructor(private readonly ctx: FleetContext) {
    super('agent-reaper', ctx.now, ctx.maintenance.maxSleepMs, ctx.onMaintenanceError);
  }

  async runOnce(now: number): Promise<{ more: boolean; next: number | null }> {
    const { store, config } = this.ctx;
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
