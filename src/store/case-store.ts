import type { NamespaceFilter } from '../domain/namespaces.js';
import type { Page } from '../domain/types.js';
import type { Case, CaseMember } from '../domain/runs.js';

/**
 * Storage of cases: groups of pipeline runs whose embeddings are alike. Kept apart from `Store`
 * and `PipelineStore` so that a driver can add it on its own schedule.
 */
export interface CaseStore {
  /**
   * The cases created or changed after `afterVersion`, in version order, with their centroids: what
   * a node's in-memory index loads at start (from 0) and catches up on before each assignment, so
   * that it sees the cases other nodes made. Every write to a case gives it a version above all
   * earlier ones.
   */
  caseCentroids(params: { afterVersion: number }): Promise<{ id: number; namespace: string; centroid: number[]; version: number }[]>;
  /**
   * Runs `work` while no other caller, on any node sharing the store, runs its own: assignments to
   * cases take turns cluster-wide, so two alike runs arriving on two nodes cannot open two cases.
   */
  caseExclusive<T>(work: () => Promise<T>): Promise<T>;
  /** The case a run already belongs to, if any. */
  caseOfRun(params: { runId: number }): Promise<{ caseId: number; similarity: number } | undefined>;
  /** Opens a case in the run's namespace, with the run as its first member. */
  caseCreate(params: { namespace: string; runId: number; title: string; text: string; vector: number[]; now: number }): Promise<Case>;
  /** Adds the run to the case and stores its new centroid, in one write. */
  caseAddMember(params: { caseId: number; runId: number; text: string; similarity: number; centroid: number[]; now: number }): Promise<Case>;
  /** By id, whatever its namespace: the route says whether the asker may see it. */
  caseGet(params: { id: number }): Promise<Case | undefined>;
  /** Newest first, of the namespaces asked for (all without the filter). */
  caseList(params: { namespaces?: NamespaceFilter; limit: number; cursor?: string }): Promise<Page<Case>>;
  caseMembers(params: { caseId: number; limit: number }): Promise<CaseMember[]>;
}
