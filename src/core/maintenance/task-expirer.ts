import { summarizeTask } from '../../domain/types.js';
import type { FleetContext } from '../context.js';
import { expiredError } from '../rules/control.js';
import { DeadlineService } from './deadline-service.js';

/** Sends tasks nobody claimed within their scheduleTimeoutMs to dead, at the moment they expire. */
export class TaskExpirer extends DeadlineService {
  constructor(private readonly ctx: FleetContext) {
    super('task-expirer', ctx.now, ctx.maintenance.maxSleepMs, ctx.onMaintenanceError);
  }

  async runOnce(now: number): Promise<{ more: boolean; next: number | null }> {
    const batch = this.ctx.maintenance.batchSize;
    const expired = await this.ctx.store.taskExpireUnclaimed({ now, limit: batch, error: expiredError() });
    for (const { task, from } of expired) if (from !== 'waiting') this.ctx.bus.publish('task.dead', { task: summarizeTask(task) });
    // Tasks that waited on an expired one, cancelled or released in the same write.
    const released = expired.filter((t) => t.from === 'waiting');
    if (released.length > 0) this.ctx.publishTransitions(released, 'due');
    return { more: expired.length === batch, next: await this.ctx.store.taskNextExpiry() };
  }
}
