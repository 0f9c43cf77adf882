import { FleetError } from '../../domain/errors.js';
import type { NamespaceFilter } from '../../domain/namespaces.js';
import type { Page } from '../../domain/types.js';
import type { ApprovalWait, PipelineRun, PipelineVersion, RunStatus } from '../../domain/runs.js';
import * as lists from '../lists.js';
import { toRun, toVersion, type RunRow, type StepRow, type VersionRow } from '../pipeline-rows.js';
import type { PipelineStore, RunInsertParams, RunLease, RunListParams, StepWrite } from '../pipeline-store.js';
import type { RepeatCheck } from '../store.js';
import type { PostgresDatabase, Query } from './database.js';

const UNFINISHED = "status IN ('queued', 'running')";

/** Sets the run's status (and touches it) while `owner` drives it and it is unfinished. $1 run, $2 status, $3 now, $4 owner. */
const RUN_TOUCH = `UPDATE pipeline_runs SET status = $2, updated_at = $3 WHERE id = $1 AND ${UNFINISHED} AND owner = $4 RETURNING *`;
/** Finishes the run and ends its lease. $1 run, $2 status, $3 output, $4 error, $5 now, $6 owner (NULL: whoever drives it). */
const RUN_FINISH = `UPDATE pipeline_runs SET status = $2, output = $3, error = $4, updated_at = $5, finished_at = $5,
    owner = NULL, lease_expires_at = NULL
  WHERE id = $1 AND ${UNFINISHED} AND ($6::text IS NULL OR owner = $6) RETURNING *`;
/** Ends the run's unfinished steps. $1 run, $2 status, $3 now. */
const STEPS_END = "UPDATE pipeline_steps SET status = $2, finished_at = $3 WHERE run_id = $1 AND status IN ('pending', 'running', 'waiting')";

/**
 * Pipeline runs on PostgreSQL, on the driver's pool, shared by every node. Each run is driven
 * by one node at a time, the holder of its lease (owner and expiry); every write of the driver is
 * fenced by the owner, so a node that stalled past its lease cannot record a step the node that
 * took over is running.
 */
export class PostgresRuns implements PipelineStore {
  constructor(private readonly db: PostgresDatabase) {}

  /** The runs of these rows with their steps, in the rows' order: two statements, whatever the number. */
  private async withSteps(q: Query, rows: RunRow[]): Promise<PipelineRun[]> {
    if (rows.length === 0) return [];
    const steps = await q<StepRow>('SELECT * FROM pipeline_steps WHERE run_id = ANY($1::bigint[]) ORDER BY run_id, position', [rows.map((r) => r.id)]);
    const byRun = new Map<number, StepRow[]>();
    for (const step of steps) {
      const list = byRun.get(step.run_id);
      if (list) list.push(step);
      else byRun.set(step.run_id, [step]);
    }
    return rows.map((row) => toRun(row, byRun.get(row.id) ?? []));
  }

  private async one(q: Query, rows: RunRow[]): Promise<PipelineRun | undefined> {
    return rows.length === 0 ? undefined : (await this.withSteps(q, rows))[0];
  }

  private query: Query = (text, values) => this.db.query(text, values);

  runInsertMany(params: { runs: RunInsertParams[]; lease: RunLease; now: number; onRepeat: RepeatCheck }): Promise<{ run: PipelineRun; created: boolean }[]> {
    return this.db.transaction(async (q) => {
      const results: { run: PipelineRun; created: boolean }[] = [];
      for (const [index, r] of params.runs.entries()) {
        const [inserted] = await q<RunRow>(
          `INSERT INTO pipeline_runs (namespace, pipeline, status, input, idempotency_key, request_hash, created_at, updated_at, owner, lease_expires_at,
             pipeline_version)
           VALUES ($9, $1, 'queued', $2, $3, $4, $5, $5, $6, $5 + $7::bigint, $8)
           ON CONFLICT (namespace, idempotency_key) DO NOTHING RETURNING *`,
          [
            r.pipeline,
            JSON.stringify(r.input ?? null),
            r.idempotencyKey,
            r.requestHash,
            params.now,
            params.lease.owner,
            params.lease.leaseMs,
            r.pipelineVersion,
            r.namespace,
          ],
        );
        if (inserted) {
          await q(
            "INSERT INTO pipeline_steps (run_id, position, name, status) SELECT $1, ord - 1, name, 'pending' FROM unnest($2::text[]) WITH ORDINALITY AS s(name, ord)",
            [inserted.id, r.steps],
          );
          results.push({ run: (await this.one(q, [inserted]))!, created: true });
          continue;
        }
        // The key was used: by a committed run, or by another node's insert that commits first (then this waits for it).
        const [existing] = await q<RunRow>('SELECT * FROM pipeline_runs WHERE namespace = $1 AND idempotency_key = $2', [r.namespace, r.idempotencyKey]);
        params.onRepeat({ index, existing: { id: existing.id, requestHash: existing.request_hash } });
        results.push({ run: (await this.one(q, [existing]))!, created: false });
      }
      return results;
    });
  }

  async runGet(params: { id: number }): Promise<PipelineRun | undefined> {
    return this.one(this.query, await this.query<RunRow>('SELECT * FROM pipeline_runs WHERE id = $1', [params.id]));
  }

  async runList(params: RunListParams): Promise<Page<PipelineRun>> {
    const page = await this.db.page(lists.runList(params));
    return { items: await this.withSteps(this.query, page.items), nextCursor: page.nextCursor };
  }

  async runAcquire(params: RunLease & { afterId: number; limit: number; now: number }): Promise<PipelineRun[]> {
    // SKIP LOCKED: nodes looking for orphaned runs at the same moment take different ones.
    const rows = await this.query<RunRow>(
      `UPDATE pipeline_runs SET owner = $1, lease_expires_at = $2 + $3::bigint WHERE id IN (
         SELECT id FROM pipeline_runs WHERE ${UNFINISHED} AND id > $5 AND (owner IS NULL OR owner = $1 OR lease_expires_at <= $2)
         ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED
       ) RETURNING *`,
      [params.owner, params.now, params.leaseMs, params.limit, params.afterId],
    );
    return this.withSteps(this.query, rows.sort((a, b) => a.id - b.id));
  }

  async runRenew(params: RunLease & { ids: number[]; now: number }): Promise<{ id: number; updatedAt: number }[]> {
    const rows = await this.query<{ id: number; updated_at: number }>(
      `UPDATE pipeline_runs SET lease_expires_at = $3 + $4::bigint WHERE id = ANY($1::bigint[]) AND owner = $2 AND ${UNFINISHED} RETURNING id, updated_at`,
      [params.ids, params.owner, params.now, params.leaseMs],
    );
    return rows.map((r) => ({ id: r.id, updatedAt: r.updated_at }));
  }

  async runRelease(params: { owner: string; ids: number[] }): Promise<void> {
    await this.query('UPDATE pipeline_runs SET owner = NULL, lease_expires_at = NULL WHERE id = ANY($1::bigint[]) AND owner = $2', [params.ids, params.owner]);
  }

  stepStart(params: StepWrite): Promise<PipelineRun | undefined> {
    return this.db.transaction(async (q) => {
      const run = await q<RunRow>(RUN_TOUCH, [params.runId, 'running', params.now, params.owner]);
      if (run.length === 0) return undefined;
      const started = await q(
        `UPDATE pipeline_steps SET status = 'running', attempts = attempts + (CASE WHEN status = 'pending' THEN 1 ELSE 0 END),
           started_at = $3, next_attempt_at = NULL
         WHERE run_id = $1 AND name = $2 AND status IN ('pending', 'running') RETURNING run_id`,
        [params.runId, params.step, params.now],
      );
      if (started.length === 0) throw new FleetError('FLEETD_ERR_RUN_STATE', `step ${params.step} of run ${params.runId} is not pending`);
      return this.one(q, run);
    });
  }

  stepComplete(params: StepWrite & { output: unknown }): Promise<PipelineRun | undefined> {
    return this.db.transaction(async (q) => {
      const run = await q<RunRow>(RUN_TOUCH, [params.runId, 'running', params.now, params.owner]);
      if (run.length === 0) return undefined;
      await q(
        `UPDATE pipeline_steps SET status = 'completed', output = $3, error = NULL, finished_at = $4
         WHERE run_id = $1 AND name = $2 AND status = 'running'`,
        [params.runId, params.step, JSON.stringify(params.output ?? null), params.now],
      );
      return this.one(q, run);
    });
  }

  stepRetryLater(params: StepWrite & { error: unknown; nextAttemptAt: number }): Promise<PipelineRun | undefined> {
    return this.db.transaction(async (q) => {
      const run = await q<RunRow>(RUN_TOUCH, [params.runId, 'running', params.now, params.owner]);
      if (run.length === 0) return undefined;
      await q(
        `UPDATE pipeline_steps SET status = 'pending', error = $3, next_attempt_at = $4
         WHERE run_id = $1 AND name = $2 AND status = 'running'`,
        [params.runId, params.step, JSON.stringify(params.error ?? null), params.nextAttemptAt],
      );
      return this.one(q, run);
    });
  }

  stepFail(params: StepWrite & { error: unknown }): Promise<PipelineRun | undefined> {
    return this.db.transaction(async (q) => {
      const runError = JSON.stringify({ step: params.step, error: params.error ?? null });
      const run = await q<RunRow>(RUN_FINISH, [params.runId, 'failed', null, runError, params.now, params.owner]);
      if (run.length === 0) return undefined;
      await q('UPDATE pipeline_steps SET status = $3, error = $4, finished_at = $5 WHERE run_id = $1 AND name = $2', [
        params.runId,
        params.step,
        'failed',
        JSON.stringify(params.error ?? null),
        params.now,
      ]);
      await q(STEPS_END, [params.runId, 'skipped', params.now]);
      return this.one(q, run);
    });
  }

  runComplete(params: { runId: number; owner: string; output: unknown; now: number }): Promise<PipelineRun | undefined> {
    return this.db.transaction(async (q) =>
      this.one(q, await q<RunRow>(RUN_FINISH, [params.runId, 'completed', JSON.stringify(params.output ?? null), null, params.now, params.owner])),
    );
  }

  runCancel(params: { runId: number; now: number }): Promise<PipelineRun | undefined> {
    return this.db.transaction(async (q) => {
      const run = await q<RunRow>(RUN_FINISH, [params.runId, 'cancelled', null, null, params.now, null]);
      if (run.length === 0) return undefined;
      await q(STEPS_END, [params.runId, 'cancelled', params.now]);
      return this.one(q, run);
    });
  }

  async runCounts(): Promise<{ pipeline: string; status: RunStatus; count: number }[]> {
    return this.query('SELECT pipeline, status, n AS count FROM pipeline_run_counts WHERE n > 0');
  }

  async runDeleteFinished(params: { before: number; keepNewest?: number; limit: number }): Promise<number> {
    // Steps go with their run (ON DELETE CASCADE).
    const old = await this.query<{ id: number }>(
      'DELETE FROM pipeline_runs WHERE id IN (SELECT id FROM pipeline_runs WHERE finished_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING id',
      [params.before, params.limit],
    );
    if (params.keepNewest === undefined || old.length === params.limit) return old.length;
    const beyond = await this.query<{ id: number }>(
      `DELETE FROM pipeline_runs WHERE id IN (
         SELECT id FROM pipeline_runs WHERE finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT $1 OFFSET $2 FOR UPDATE SKIP LOCKED
       ) RETURNING id`,
      [params.limit - old.length, params.keepNewest],
    );
    return old.length + beyond.length;
  }

  versionAppend(params: { namespace: string; name: string; definition: unknown; now: number; onlyIfLive?: boolean }): Promise<PipelineVersion | undefined> {
    return this.db.transaction(async (q) => {
      // Appends to one name take turns, so that two nodes never number the same version.
      await q('SELECT pg_advisory_xact_lock(hashtext($1))', [`fleetd-pipeline-version:${this.db.schema}:${params.namespace}:${params.name}`]);
      const [newest] = await q<VersionRow>('SELECT * FROM pipeline_versions WHERE namespace = $1 AND name = $2 ORDER BY version DESC LIMIT 1', [
        params.namespace,
        params.name,
      ]);
      if (params.onlyIfLive && (newest === undefined || newest.definition === null)) return undefined;
      const [row] = await q<VersionRow>('INSERT INTO pipeline_versions (namespace, name, version, definition, created_at) VALUES ($5, $1, $2, $3, $4) RETURNING *', [
        params.name,
        (newest?.version ?? 0) + 1,
        params.definition === null ? null : JSON.stringify(params.definition),
        params.now,
        params.namespace,
      ]);
      return toVersion(row);
    });
  }

  async versionList(params: { namespace: string; name: string; limit: number }): Promise<PipelineVersion[]> {
    const rows = await this.query<VersionRow>('SELECT * FROM pipeline_versions WHERE namespace = $1 AND name = $2 ORDER BY version DESC LIMIT $3', [
      params.namespace,
      params.name,
      params.limit,
    ]);
    return rows.map(toVersion);
  }

  async versionGet(params: { namespace: string; name: string; version: number }): Promise<PipelineVersion | undefined> {
    const [row] = await this.query<VersionRow>('SELECT * FROM pipeline_versions WHERE namespace = $1 AND name = $2 AND version = $3', [
      params.namespace,
      params.name,
      params.version,
    ]);
    return row && toVersion(row);
  }

  async versionCurrent(params: { namespaces?: NamespaceFilter }): Promise<PipelineVersion[]> {
    const rows = await this.query<VersionRow>(
      `SELECT * FROM (
         SELECT DISTINCT ON (namespace, name) * FROM pipeline_versions WHERE $1::text[] IS NULL OR namespace = ANY($1::text[])
         ORDER BY namespace, name, version DESC
       ) newest WHERE definition IS NOT NULL ORDER BY name, namespace`,
      [params.namespaces ?? null],
    );
    return rows.map(toVersion);
  }

  stepAwait(params: StepWrite & { approval: ApprovalWait }): Promise<PipelineRun | undefined> {
    return this.db.transaction(async (q) => {
      const run = await q<RunRow>(RUN_TOUCH, [params.runId, 'running', params.now, params.owner]);
      if (run.length === 0) return undefined;
      const [step] = await q<{ status: string }>(
        `UPDATE pipeline_steps SET status = 'waiting', attempts = attempts + (CASE WHEN status = 'pending' THEN 1 ELSE 0 END),
           started_at = CASE WHEN status = 'pending' THEN $3 ELSE started_at END, next_attempt_at = NULL,
           approval = CASE WHEN status = 'pending' THEN $4 ELSE approval END
         WHERE run_id = $1 AND name = $2 AND status IN ('pending', 'waiting') RETURNING status`,
        [params.runId, params.step, params.now, JSON.stringify(params.approval)],
      );
      if (!step) throw new FleetError('FLEETD_ERR_RUN_STATE', `step ${params.step} of run ${params.runId} is not pending`);
      return this.one(q, run);
    });
  }

  stepDecide(params: { runId: number; step: string; approved: boolean; output: unknown; now: number }): Promise<PipelineRun | undefined> {
    return this.db.transaction(async (q) => {
      const output = JSON.stringify(params.output ?? null);
      // The row lock makes decisions arriving at once on several nodes take turns: the second finds the step decided.
      const decided = await q(
        `UPDATE pipeline_steps SET status = $3, output = $4, error = $5, finished_at = $6
         WHERE run_id = $1 AND name = $2 AND status = 'waiting' RETURNING run_id`,
        [params.runId, params.step, params.approved ? 'completed' : 'failed', output, params.approved ? null : output, params.now],
      );
      if (decided.length === 0) return undefined;
      if (params.approved) {
        return this.one(q, await q<RunRow>(`UPDATE pipeline_runs SET updated_at = $2 WHERE id = $1 AND ${UNFINISHED} RETURNING *`, [params.runId, params.now]));
      }
      const runError = JSON.stringify({ step: params.step, error: params.output ?? null });
      const run = await q<RunRow>(RUN_FINISH, [params.runId, 'failed', null, runError, params.now, null]);
      await q(STEPS_END, [params.runId, 'skipped', params.now]);
      return this.one(q, run);
    });
  }
}
