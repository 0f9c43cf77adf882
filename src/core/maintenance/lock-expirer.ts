import type { FleetContext } from '../context.js';
import { DeadlineService } from './deadline-service.js';

/** Deletes locks when their TTL runs out. */
export class LockExpirer extends DeadlineService {
  constructor(private readonly ctx: FleetContext) {
    super('lock-expirer', ctx.now, ctx.maintenance.maxSleepMs, ctx.onMaintenanceError);
  }

  async runOnce(now: number): Promise<{ more: boolean; next: number | null }> {
    const batch = this.ctx.maintenance.batchSize;
    const expired = await this.ctx.store.lockExpire({ now, limit: batch });
    for (const lock of expired) this.ctx.bus.publish('lock.released', { lock, reason: 'expired' });
    return { more: expired.length === batch, next: await this.ctx.store.lockNextExpiry() };
  }
}
