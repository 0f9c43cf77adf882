import type { FleetContext } from '../context.js';
import { DeadlineService } from './deadline-service.js';

/**
 * Deletes finished tasks once they are older than the retention period (retentionMs) or beyond the
 * most a store keeps (retentionMaxTasks), a batch at a time.
 */
export class TaskCleaner extends DeadlineService {
  constructor(private readonly ctx: FleetContext) {
    super('task-cleaner', ctx.now, 60_000, ctx.onMaintenanceError);
  }

  async runOnce(now: number): Promise<{ more: boolean; next: number | null }> {
    const { retentionMs, retentionMaxTasks } = this.ctx.config;
    if (retentionMs === 0 && retentionMaxTasks === 0) return { more: false, next: null };
    const batch = this.ctx.maintenance.batchSize;
    const deleted = await this.ctx.store.taskDeleteFinished({
      // Finished before the epoch: none, when only the count is limited.
      before: retentionMs === 0 ? 0 : now - retentionMs,
      ...(retentionMaxTasks === 0 ? {} : { keepNewest: retentionMaxTasks }),
      limit: batch,
    });
    return { more: deleted === batch, next: now + 60_000 };
  }
}
