import type { FleetContext } from '../context.js';
import { DeadlineService } from './deadline-service.js';

/** Deletes audit entries older than auditRetentionMs, a batch at a time, once a minute. */
export class AuditCleaner extends DeadlineService {
  constructor(private readonly ctx: FleetContext) {
    super('audit-cleaner', ctx.now, 60_000, ctx.onMaintenanceError);
  }

  async runOnce(now: number): Promise<{ more: boolean; next: number | null }> {
    const { auditRetentionMs } = this.ctx.config;
    if (auditRetentionMs === 0) return { more: false, next: null };
    const batch = this.ctx.maintenance.batchSize;
    const deleted = await this.ctx.store.auditDeleteBefore({ before: now - auditRetentionMs, limit: batch });
    return { more: deleted === batch, next: now + 60_000 };
  }
}
