import type { FleetContext } from '../context.js';
import { DeadlineService } from './deadline-service.js';

/** Moves delayed and backing-off tasks into the queue when their runAt comes. */
export class TaskScheduler extends DeadlineService {
  constructor(private readonly ctx: FleetContext) {
    super('task-scheduler', ctx.now, ctx.maintenance.maxSleepMs, ctx.onMaintenanceError);
  }

  async runOnce(now: number): Promise<{ more: boolean; next: number | null }> {
    const batch = this.ctx.maintenance.batchSize;
    const due = await this.ctx.store.taskPromoteScheduled({ now, limit: batch });
    this.ctx.publishTransitions(due, 'due');
    return { more: due.length === batch, next: (await this.ctx.store.taskNextDeadlines()).runAt };
  }
}
