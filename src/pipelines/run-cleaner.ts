import type { FleetdConfig } from '../config.js';
import { DeadlineService } from '../core/maintenance/deadline-service.js';
import type { PipelineStore } from '../store/pipeline-store.js';

/** Runs deleted in one go; the next batch follows at once while a batch comes back full. */
const BATCH = 500;
/** Retention has no deadline to wake for: a sweep a minute keeps the store within bounds. */
const SWEEP_MS = 60_000;

/**
 * Deletes finished pipeline runs, with their steps, once they are older than runRetentionMs or
 * beyond the most a store keeps (runRetentionMaxRuns). Cases keep their members' text and similarity.
 */
export class RunCleaner extends DeadlineService {
  constructor(
    private readonly store: PipelineStore,
    private readonly config: Readonly<Pick<FleetdConfig, 'runRetentionMs' | 'runRetentionMaxRuns'>>,
    now: () => number,
    onError: (err: unknown, service: string) => void,
  ) {
    super('run-cleaner', now, SWEEP_MS, onError);
  }

  async runOnce(now: number): Promise<{ more: boolean; next: number | null }> {
    const { runRetentionMs, runRetentionMaxRuns } = this.config;
    if (runRetentionMs === 0 && runRetentionMaxRuns === 0) return { more: false, next: null };
    const deleted = await this.store.runDeleteFinished({
      // Finished before the epoch: none, when only the count is limited.
      before: runRetentionMs === 0 ? 0 : now - runRetentionMs,
      ...(runRetentionMaxRuns === 0 ? {} : { keepNewest: runRetentionMaxRuns }),
      limit: BATCH,
    });
    return { more: deleted === BATCH, next: now + SWEEP_MS };
  }
}
