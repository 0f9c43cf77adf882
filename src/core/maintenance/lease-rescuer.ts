import type { FleetContext } from '../context.js';
import { ranOutLeases } from '../rules/control.js';
import { DeadlineService } from './deadline-service.js';

/**
 * Returns tasks whose lease expired to the queue (attempts spent: to dead), at the moment they
 * expire; an attempt that ran for its whole execution timeout fails as FLEETD_ERR_TIMEOUT.
 */
export class LeaseRescuer extends DeadlineService {
  constructor(private readonly ctx: FleetContext) {
    super('lease-rescuer', ctx.now, ctx.maintenance.maxSleepMs, ctx.onMaintenanceError);
  }

  async runOnce(now: number): Promise<{ more: boolean; next: number | null }> {
    const batch = this.ctx.maintenance.batchSize;
    const rescued = await this.ctx.store.taskRescueExpiredLeases({ now, limit: batch, endLease: ranOutLeases(now, this.ctx.config.taskBackoffMaxMs) });
    this.ctx.publishTransitions(rescued, 'lease_expired');
    return { more: rescued.length === batch, next: (await this.ctx.store.taskNextDeadlines()).leaseExpiresAt };
  }
}
