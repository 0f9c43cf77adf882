import type { Page } from '../core/types.js';
import type { Case, CaseMember } from '../pipelines/cases.js';

/**
 * Storage of cases: groups of pipeline runs whose embeddings are alike. Kept apart from `Store`
 * and `PipelineStore` so that a driver can add it on its own schedule.
 */
export interface CaseStore {
  /** Every case's id and centroid, oldest first, to rebuild the in-memory index at start. */
  caseCentroids(): Promise<{ id: number; centroid: number[] }[]>;
  /** The case a run already belongs to, if any. */
  caseOfRun(params: { runId: number }): Promise<{ caseId: number; similarity: number } | undefined>;
  caseCreate(params: { runId: number; title: string; text: string; vector: number[]; now: number }): Promise<Case>;
  /** Adds the run to the case and stores its new centroid, in one write. */
  caseAddMember(params: { caseId: number; runId: number; text: string; similarity: number; centroid: number[]; now: number }): Promise<Case>;
  caseGet(params: { id: number }): Promise<Case | undefined>;
  /** Newest first. */
  caseList(params: { limit: number; cursor?: string }): Promise<Page<Case>>;
  caseMembers(params: { caseId: number; limit: number }): Promise<CaseMember[]>;
}
