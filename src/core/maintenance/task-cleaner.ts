import type { FleetContext } from '../context.js';
import { DeadlineService } from './deadline-service.js';

/** Deletes finished tasks once they are older than the retention period, a batch at a time. */
export class TaskCleaner extends DeadlineService {
  constructor(private readonly ctx: FleetContext) {
    super('task-cleaner', ctx.now, 60_000, ctx.onMaintenanceError);
  }

  async runOnce(now: number): Promise<{ more: boolean; next: number | null }> {
    const retention = this.ctx.config.retentionMs;
    if (retention === 0) return { more: false, next: null };
    const batch = this.ctx.maintenance.batchSize;
    const deleted = await this.ctx.store.taskDeleteFinished({ before: now - retention, limit: batch });
    return { more: deleted === batch, next: now + 60_000 };
  }
}
