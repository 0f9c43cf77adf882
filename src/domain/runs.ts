/**
 * A pipeline run's life: `queued` (created, no step started yet) → `running` → `completed`, or
 * `failed` (a step exhausted its attempts; that step and its error are recorded), or `cancelled`.
 */
export type RunStatus = 'queued' | 'running' | 'completed' | 'failed' | 'cancelled';
export const RUN_STATUSES: readonly RunStatus[] = ['queued', 'running', 'completed', 'failed', 'cancelled'];
export const FINISHED_RUN_STATUSES: ReadonlySet<RunStatus> = new Set(['completed', 'failed', 'cancelled']);

/**
 * A step's life: `pending` → `running` → `completed`; a failed attempt goes back to `pending` with
 * `nextAttemptAt` set, or to `failed` when attempts are spent. Steps the run no longer needs (after
 * a failure or a cancellation) end `skipped` or `cancelled`.
 */
export type StepStatus = 'pending' | 'running' | 'completed' | 'failed' | 'skipped' | 'cancelled';
export const STEP_STATUSES: readonly StepStatus[] = ['pending', 'running', 'completed', 'failed', 'skipped', 'cancelled'];

export interface StepState {
  name: string;
  status: StepStatus;
  /** Attempts started so far. */
  attempts: number;
  output: unknown;
  error: unknown;
  startedAt: number | null;
  finishedAt: number | null;
  /** When a step waiting to retry may start again. */
  nextAttemptAt: number | null;
}

export interface PipelineRun {
  id: number;
  pipeline: string;
  status: RunStatus;
  input: unknown;
  /** The output of the run's last step (or of every sink, by name, when the DAG has several). */
  output: unknown;
  /** For a failed run: which step failed and why. */
  error: unknown;
  idempotencyKey: string | null;
  createdAt: number;
  updatedAt: number;
  finishedAt: number | null;
  steps: StepState[];
}

/** A run as events carry it: without input and outputs, which can be large and are fetched on demand. */
export interface RunSummary {
  id: number;
  pipeline: string;
  status: RunStatus;
}

/** A group of alike pipeline runs (by the similarity of their embeddings), kept by the case service. */
export interface Case {
  id: number;
  title: string;
  size: number;
  createdAt: number;
  updatedAt: number;
}

export interface CaseMember {
  runId: number;
  similarity: number;
  text: string;
  addedAt: number;
}
