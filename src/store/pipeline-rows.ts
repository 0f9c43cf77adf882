import type { Case } from '../domain/runs.js';
import type { ApprovalWait, PipelineRun, PipelineVersion, RunStatus, StepState, StepStatus } from '../domain/runs.js';
import { parseJson } from './rows.js';

/** A pipeline_runs row, the same in both SQL drivers (JSON kept as text). */
export interface RunRow {
  id: number;
  namespace: string;
  pipeline: string;
  status: RunStatus;
  input: string;
  output: string | null;
  error: string | null;
  idempotency_key: string | null;
  request_hash: string | null;
  created_at: number;
  updated_at: number;
  finished_at: number | null;
  pipeline_version: number | null;
}

/** A pipeline_steps row. */
export interface StepRow {
  run_id: number;
  position: number;
  name: string;
  status: StepStatus;
  attempts: number;
  output: string | null;
  error: string | null;
  started_at: number | null;
  finished_at: number | null;
  next_attempt_at: number | null;
  approval: string | null;
}

export function toStep(row: StepRow): StepState {
  return {
    name: row.name,
    status: row.status,
    attempts: row.attempts,
    output: parseJson(row.output),
    error: parseJson(row.error),
    startedAt: row.started_at,
    finishedAt: row.finished_at,
    nextAttemptAt: row.next_attempt_at,
    approval: parseJson(row.approval) as ApprovalWait | null,
  };
}

export function toRun(row: RunRow, steps: StepRow[]): PipelineRun {
  return {
    id: row.id,
    namespace: row.namespace,
    pipeline: row.pipeline,
    pipelineVersion: row.pipeline_version,
    status: row.status,
    input: JSON.parse(row.input),
    output: parseJson(row.output),
    error: parseJson(row.error),
    idempotencyKey: row.idempotency_key,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    finishedAt: row.finished_at,
    steps: steps.map(toStep),
  };
}

/** A cases row, the same in both SQL drivers (the centroid a JSON array kept as text). */
export interface CaseRow {
  id: number;
  namespace: string;
  title: string;
  centroid: string;
  size: number;
  created_at: number;
  updated_at: number;
}

export const toCase = (r: CaseRow): Case => ({ id: r.id, namespace: r.namespace, title: r.title, size: r.size, createdAt: r.created_at, updatedAt: r.updated_at });

/** A pipeline_versions row. */
export interface VersionRow {
  namespace: string;
  name: string;
  version: number;
  definition: string | null;
  created_at: number;
}

export const toVersion = (r: VersionRow): PipelineVersion => ({ namespace: r.namespace, name: r.name, version: r.version, definition: parseJson(r.definition), createdAt: r.created_at });
