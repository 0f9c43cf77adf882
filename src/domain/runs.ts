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
export type StepStatus = 'pending' | 'running' | 'completed' | 'failed' | 'skipped' | 'cancelled' | 'waiting';
/** `waiting`: an approval step waiting for a person's (or an agent's) decision, or its timeout. */
export const STEP_STATUSES: readonly StepStatus[] = ['pending', 'running', 'completed', 'failed', 'skipped', 'cancelled', 'waiting'];

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
  /** An approval step, from when it starts waiting: what it asks, until when, and who may decide. */
  approval: ApprovalWait | null;
}

/** Who may decide an approval besides admin keys: API keys and agents, by name. Absent: any submit key. */
export interface Approvers {
  keys?: string[];
  agents?: string[];
}

export interface ApprovalWait {
  /** The step's prompt, its template filled in when the step started waiting. */
  prompt: string;
  /** When the step decides itself, as onTimeout says. */
  decideBy: number;
  onTimeout: 'approve' | 'reject';
  approvers: Approvers | null;
}

/** Who decided an approval: a key or an agent (by id and name), its timeout, or anyone (auth off). */
export type Decider = { kind: 'key'; id: string; name: string } | { kind: 'agent'; id: string; name: string } | { kind: 'timeout' } | { kind: 'anonymous' };

/** A decided approval step's output (and, when rejected, its error). */
export interface ApprovalDecision {
  decision: 'approved' | 'rejected';
  by: Decider;
  comment: string | null;
  /** ISO 8601, as the rest of a step's output is JSON as given. */
  decidedAt: string;
}

/** One version of a pipeline defined over the API; a deletion is a version without a definition. */
export interface PipelineVersion {
  /** The namespace it was defined in: a name is defined per namespace. */
  namespace: string;
  name: string;
  version: number;
  /** The definition as it was given (validated); null for a deletion. */
  definition: unknown;
  createdAt: number;
}

export interface PipelineRun {
  id: number;
  /** Where it was started; its agent steps' tasks go there too. */
  namespace: string;
  pipeline: string;
  /** The version of an API-defined pipeline the run was started with (it keeps it); null for one of the file. */
  pipelineVersion: number | null;
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
  namespace: string;
  pipeline: string;
  status: RunStatus;
}

/** A group of alike pipeline runs (by the similarity of their embeddings), kept by the case service. */
export interface Case {
  id: number;
  /** That of the run that opened it: only runs of the same namespace join it. */
  namespace: string;
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
