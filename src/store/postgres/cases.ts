import type { NamespaceFilter } from '../../domain/namespaces.js';
import type { Page } from '../../domain/types.js';
import type { Case, CaseMember } from '../../domain/runs.js';
import type { CaseStore } from '../case-store.js';
import { mapPage } from '../keyset.js';
import * as lists from '../lists.js';
import { toCase, type CaseRow } from '../pipeline-rows.js';
import type { PostgresDatabase } from './database.js';

/** Cases on PostgreSQL, on the driver's pool, shared by every node. */
export class PostgresCases implements CaseStore {
  constructor(private readonly db: PostgresDatabase) {}

  async caseCentroids(params: { afterVersion: number }): Promise<{ id: number; namespace: string; centroid: number[]; version: number }[]> {
    const rows = await this.db.query<{ id: number; namespace: string; centroid: string; version: number }>(
      'SELECT id, namespace, centroid, version FROM cases WHERE version > $1 ORDER BY version',
      [params.afterVersion],
    );
    return rows.map((r) => ({ id: r.id, namespace: r.namespace, centroid: JSON.parse(r.centroid), version: r.version }));
  }

  /**
   * A session advisory lock, named for the schema, held on a connection of its own while `work`
   * runs its statements on others: the work reads the cases, searches them off the event loop and
   * writes, and a transaction held open across the search would gain nothing over the lock.
   */
  caseExclusive<T>(work: () => Promise<T>): Promise<T> {
    return this.db.withLock(`fleetd-cases:${this.db.schema}`, work);
  }

  async caseOfRun(params: { runId: number }): Promise<{ caseId: number; similarity: number } | undefined> {
    const [row] = await this.db.query<{ caseId: number; similarity: number }>(
      'SELECT case_id AS "caseId", similarity FROM case_members WHERE run_id = $1',
      [params.runId],
    );
    return row;
  }

  caseCreate(params: { namespace: string; runId: number; title: string; text: string; vector: number[]; now: number }): Promise<Case> {
    return this.db.transaction(async (q) => {
      const [row] = await q<CaseRow>('INSERT INTO cases (namespace, title, centroid, size, created_at, updated_at) VALUES ($4, $1, $2, 1, $3, $3) RETURNING *', [
        params.title,
        JSON.stringify(params.vector),
        params.now,
        params.namespace,
      ]);
      await q('INSERT INTO case_members (run_id, case_id, similarity, text, added_at) VALUES ($1, $2, 1, $3, $4)', [params.runId, row.id, params.text, params.now]);
      return toCase(row);
    });
  }

  caseAddMember(params: { caseId: number; runId: number; text: string; similarity: number; centroid: number[]; now: number }): Promise<Case> {
    return this.db.transaction(async (q) => {
      await q('INSERT INTO case_members (run_id, case_id, similarity, text, added_at) VALUES ($1, $2, $3, $4, $5)', [
        params.runId,
        params.caseId,
        params.similarity,
        params.text,
        params.now,
      ]);
      const [row] = await q<CaseRow>(`UPDATE cases SET size = size + 1, centroid = $2, updated_at = $3, version = nextval('case_versions')
         WHERE id = $1 RETURNING *`, [
        params.caseId,
        JSON.stringify(params.centroid),
        params.now,
      ]);
      return toCase(row);
    });
  }

  async caseGet(params: { id: number }): Promise<Case | undefined> {
    const [row] = await this.db.query<CaseRow>('SELECT * FROM cases WHERE id = $1', [params.id]);
    return row && toCase(row);
  }

  async caseList(params: { namespaces?: NamespaceFilter; limit: number; cursor?: string }): Promise<Page<Case>> {
    return mapPage(await this.db.page(lists.caseList(params)), toCase);
  }

  async caseMembers(params: { caseId: number; limit: number }): Promise<CaseMember[]> {
    return this.db.query<CaseMember & { runId: number }>(
      'SELECT run_id AS "runId", similarity, text, added_at AS "addedAt" FROM case_members WHERE case_id = $1 ORDER BY run_id LIMIT $2',
      [params.caseId, params.limit],
    );
  }
}
