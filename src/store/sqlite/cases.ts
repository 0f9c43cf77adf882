import { Semaphore } from '../../limits/semaphore.js';
import type { NamespaceFilter } from '../../domain/namespaces.js';
import type { Page } from '../../domain/types.js';
import type { Case, CaseMember } from '../../domain/runs.js';
import type { CaseStore } from '../case-store.js';
import { mapPage } from '../keyset.js';
import * as lists from '../lists.js';
import { toCase, type CaseRow } from '../pipeline-rows.js';
import type { SqliteDatabase } from './database.js';

/** Cases in the same SQLite database, on the queue's connection and group commit. */
export class SqliteCases implements CaseStore {
  private readonly s: ReturnType<SqliteCases['prepare']>;
  private readonly turns = new Semaphore(1);

  constructor(private readonly d: SqliteDatabase) {
    this.s = this.prepare();
  }

  private prepare() {
    const { db } = this.d;
    return {
      centroids: db.prepare('SELECT id, namespace, centroid, version FROM cases WHERE version > ? ORDER BY version'),
      ofRun: db.prepare('SELECT case_id AS caseId, similarity FROM case_members WHERE run_id = ?'),
      insert: db.prepare(`INSERT INTO cases (namespace, title, centroid, size, created_at, updated_at, version)
        VALUES (@namespace, @title, @centroid, 1, @now, @now, (SELECT coalesce(max(version), 0) + 1 FROM cases)) RETURNING *`),
      addMember: db.prepare('INSERT INTO case_members (run_id, case_id, similarity, text, added_at) VALUES (?, ?, ?, ?, ?)'),
      grow: db.prepare(`UPDATE cases SET size = size + 1, centroid = @centroid, updated_at = @now,
        version = (SELECT max(version) + 1 FROM cases) WHERE id = @id RETURNING *`),
      byId: db.prepare('SELECT * FROM cases WHERE id = ?'),
      members: db.prepare(
        'SELECT run_id AS runId, similarity, text, added_at AS addedAt FROM case_members WHERE case_id = ? ORDER BY run_id LIMIT ?',
      ),
    };
  }

  async caseCentroids(params: { afterVersion: number }): Promise<{ id: number; namespace: string; centroid: number[]; version: number }[]> {
    return (this.s.centroids.all(params.afterVersion) as { id: number; namespace: string; centroid: string; version: number }[]).map((r) => ({
      id: r.id,
      namespace: r.namespace,
      centroid: JSON.parse(r.centroid),
      version: r.version,
    }));
  }

  /** One process uses a SQLite file, so taking turns within it is enough. */
  caseExclusive<T>(work: () => Promise<T>): Promise<T> {
    return this.turns.run(work);
  }

  async caseOfRun(params: { runId: number }): Promise<{ caseId: number; similarity: number } | undefined> {
    return this.s.ofRun.get(params.runId) as { caseId: number; similarity: number } | undefined;
  }

  caseCreate(params: { namespace: string; runId: number; title: string; text: string; vector: number[]; now: number }): Promise<Case> {
    return this.d.groupCommit.write(() => {
      const row = this.s.insert.get({ namespace: params.namespace, title: params.title, centroid: JSON.stringify(params.vector), now: params.now }) as CaseRow;
      this.s.addMember.run(params.runId, row.id, 1, params.text, params.now);
      return toCase(row);
    });
  }

  caseAddMember(params: { caseId: number; runId: number; text: string; similarity: number; centroid: number[]; now: number }): Promise<Case> {
    return this.d.groupCommit.write(() => {
      this.s.addMember.run(params.runId, params.caseId, params.similarity, params.text, params.now);
      return toCase(this.s.grow.get({ id: params.caseId, centroid: JSON.stringify(params.centroid), now: params.now }) as CaseRow);
    });
  }

  async caseGet(params: { id: number }): Promise<Case | undefined> {
    const row = this.s.byId.get(params.id) as CaseRow | undefined;
    return row && toCase(row);
  }

  async caseList(params: { namespaces?: NamespaceFilter; limit: number; cursor?: string }): Promise<Page<Case>> {
    return mapPage(await this.d.page(lists.caseList(params)), toCase);
  }

  async caseMembers(params: { caseId: number; limit: number }): Promise<CaseMember[]> {
    return this.s.members.all(params.caseId, params.limit) as CaseMember[];
  }
}
