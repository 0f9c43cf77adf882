import type { Page } from '../core/types.js';
import type { PipelineRun, RunStatus } from '../pipelines/types.js';

/**
 * The storage contract of pipeline runs, kept apart from `Store` so that a driver can add pipelines
 * on its own schedule. It speaks the run's behaviour (start a step, finish it, fail the run), and
 * every write is atomic and durable when its promise resolves: a step's output is on disk before
 * the next step starts, which is what lets a restarted server resume without repeating it.
 *
 * Writes on a run that is already finished (e.g. cancelled while a step was in flight) change
 * nothing and return `undefined`, so that a late result can never revive a cancelled run.
 */
export interface PipelineStore {
  /**
   * Inserts runs in order, all or nothing, each with its steps `pending`. A run whose idempotency
   * key exists already is not inserted again: the existing run is returned with `created: false`;
   * the same key with a different pipeline or input is a conflict.
   */
  runInsertMany(params: { runs: RunInsertParams[]; now: number }): Promise<{ run: PipelineRun; created: boolean }[]>;
  runGet(params: { id: number }): Promise<PipelineRun | undefined>;
  /** Newest first. */
  runList(params: RunListParams): Promise<Page<PipelineRun>>;
  /** Runs not finished (queued or running), oldest first, a page at a time: what a starting server resumes. */
  runListUnfinished(params: { afterId: number; limit: number }): Promise<PipelineRun[]>;
  /**
   * Marks the step running and counts the attempt; the run becomes `running`. A step found already
   * `running` was interrupted by a restart: it resumes the same attempt (an agent step then waits
   * for the task it already dispatched) and the count does not change.
   */
  stepStart(params: { runId: number; step: string; now: number }): Promise<PipelineRun | undefined>;
  stepComplete(params: { runId: number; step: string; output: unknown; now: number }): Promise<PipelineRun | undefined>;
  /** A failed attempt with attempts left: the step waits until nextAttemptAt. */
  stepRetryLater(params: { runId: number; step: string; error: unknown; nextAttemptAt: number; now: number }): Promise<PipelineRun | undefined>;
  /** A step out of attempts: it is `failed`, steps not yet done are `skipped`, and the run is `failed`. */
  stepFail(params: { runId: number; step: string; error: unknown; now: number }): Promise<PipelineRun | undefined>;
  runComplete(params: { runId: number; output: unknown; now: number }): Promise<PipelineRun | undefined>;
  /** Cancels a run that has not finished; its unfinished steps become `cancelled`. */
  runCancel(params: { runId: number; now: number }): Promise<PipelineRun | undefined>;
  runCounts(): Promise<{ pipeline: string; status: RunStatus; count: number }[]>;
}

export interface RunInsertParams {
  pipeline: string;
  input: unknown;
  idempotencyKey: string | null;
  /** The pipeline's step names, in definition order. */
  steps: string[];
}

export interface RunListParams {
  pipeline?: string;
  status?: RunStatus;
  limit: number;
  cursor?: string;
}
