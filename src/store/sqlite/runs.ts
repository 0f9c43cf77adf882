import { FleetError } from '../../domain/errors.js';
import type { NamespaceFilter } from '../../domain/namespaces.js';
import type { Page } from '../../domain/types.js';
import type { ApprovalWait, PipelineRun, PipelineVersion, RunStatus } from '../../domain/runs.js';
import { mapPage } from '../keyset.js';
import * as lists from '../lists.js';
import { toRun, toVersion, type RunRow, type StepRow, type VersionRow } from '../pipeline-rows.js';
import type { PipelineStore, RunInsertParams, RunLease, RunListParams, StepWrite } from '../pipeline-store.js';
import type { RepeatCheck } from '../store.js';
import type { SqliteDatabase } from './database.js';

/**
 * Pipeline runs in the same SQLite database as the tasks, on the same connection and group commit
 * as the queue (SQLite has one writer; a second connection would only contend for it).
 */
export class SqliteRuns implements PipelineStore {
  private readonly s: ReturnType<SqliteRuns['prepare']>;

  constructor(private readonly d: SqliteDatabase) {
    this.s = this.prepare();
  }

  private prepare() {
    const { db } = this.d;
    return {
      runInsert: db.prepare(`INSERT INTO pipeline_runs (namespace, pipeline, status, input, idempotency_key, request_hash, created_at, updated_at,
        owner, lease_expires_at, pipeline_version)
        VALUES (@namespace, @pipeline, 'queued', @input, @idempotency_key, @request_hash, @now, @now, @owner, @now + @lease_ms, @pipeline_version) RETURNING *`),
      stepInsert: db.prepare("INSERT INTO pipeline_steps (run_id, position, name, status) VALUES (?, ?, ?, 'pending')"),
      runByKey: db.prepare('SELECT * FROM pipeline_runs WHERE namespace = ? AND idempotency_key = ?'),
      runById: db.prepare('SELECT * FROM pipeline_runs WHERE id = ?'),
      stepsOf: db.prepare('SELECT * FROM pipeline_steps WHERE run_id = ? ORDER BY position'),
      acquire: db.prepare(`UPDATE pipeline_runs SET owner = @owner, lease_expires_at = @now + @lease_ms WHERE id IN (
        SELECT id FROM pipeline_runs WHERE status IN ('queued', 'running') AND id > @after_id
          AND (owner IS NULL OR owner = @owner OR lease_expires_at <= @now) ORDER BY id LIMIT @limit
        ) RETURNING *`),
      renew: db.prepare(`UPDATE pipeline_runs SET lease_expires_at = @now + @lease_ms
        WHERE id IN (SELECT value FROM json_each(@ids)) AND owner = @owner AND status IN ('queued', 'running') RETURNING id, updated_at`),
      release: db.prepare('UPDATE pipeline_runs SET owner = NULL, lease_expires_at = NULL WHERE id IN (SELECT value FROM json_each(@ids)) AND owner = @owner'),
      runTouch: db.prepare(`UPDATE pipeline_runs SET status = @status, updated_at = @now WHERE id = @id
        AND status IN ('queued', 'running') AND owner = @owner RETURNING *`),
      runFinish: db.prepare(`UPDATE pipeline_runs SET status = @status, output = @output, error = @error, updated_at = @now,
        finished_at = @now, owner = NULL, lease_expires_at = NULL
        WHERE id = @id AND status IN ('queued', 'running') AND (@owner IS NULL OR owner = @owner) RETURNING *`),
      stepStart: db.prepare(`UPDATE pipeline_steps SET status = 'running', attempts = attempts + (status = 'pending'), started_at = @now,
        next_attempt_at = NULL WHERE run_id = @run_id AND name = @name AND status IN ('pending', 'running')`),
      stepComplete: db.prepare(`UPDATE pipeline_steps SET status = 'completed', output = @output, error = NULL, finished_at = @now
        WHERE run_id = @run_id AND name = @name AND status = 'running'`),
      stepRetry: db.prepare(`UPDATE pipeline_steps SET status = 'pending', error = @error, next_attempt_at = @next
        WHERE run_id = @run_id AND name = @name AND status = 'running'`),
      stepFail: db.prepare(`UPDATE pipeline_steps SET status = 'failed', error = @error, finished_at = @now
        WHERE run_id = @run_id AND name = @name`),
      stepsEnd: db.prepare(`UPDATE pipeline_steps SET status = @status, finished_at = @now
        WHERE run_id = @run_id AND status IN ('pending', 'running', 'waiting')`),
      versionNewest: db.prepare('SELECT * FROM pipeline_versions WHERE namespace = ? AND name = ? ORDER BY version DESC LIMIT 1'),
      versionInsert: db.prepare('INSERT INTO pipeline_versions (namespace, name, version, definition, created_at) VALUES (?, ?, ?, ?, ?) RETURNING *'),
      versionList: db.prepare('SELECT * FROM pipeline_versions WHERE namespace = ? AND name = ? ORDER BY version DESC LIMIT ?'),
      versionGet: db.prepare('SELECT * FROM pipeline_versions WHERE namespace = ? AND name = ? AND version = ?'),
      // @namespaces: a JSON array, or NULL for every namespace.
      versionCurrent: db.prepare(`SELECT v.* FROM pipeline_versions v
        JOIN (SELECT namespace, name, MAX(version) AS version FROM pipeline_versions GROUP BY namespace, name) newest USING (namespace, name, version)
        WHERE v.definition IS NOT NULL AND (@namespaces IS NULL OR v.namespace IN (SELECT value FROM json_each(@namespaces)))
        ORDER BY v.name, v.namespace`),
      stepAwait: db.prepare(`UPDATE pipeline_steps SET status = 'waiting', attempts = attempts + 1, started_at = @now, next_attempt_at = NULL,
        approval = @approval WHERE run_id = @run_id AND name = @name AND status = 'pending'`),
      stepIs: db.prepare('SELECT status FROM pipeline_steps WHERE run_id = ? AND name = ?').pluck(),
      stepDecide: db.prepare(`UPDATE pipeline_steps SET status = @status, output = @output, error = @error, finished_at = @now
        WHERE run_id = @run_id AND name = @name AND status = 'waiting'`),
      runTouchAny: db.prepare("UPDATE pipeline_runs SET updated_at = @now WHERE id = @id AND status IN ('queued', 'running') RETURNING *"),
      counts: db.prepare('SELECT pipeline, status, n AS count FROM pipeline_run_counts WHERE n > 0'),
      // Steps go with their run (ON DELETE CASCADE).
      deleteFinished: db.prepare('DELETE FROM pipeline_runs WHERE id IN (SELECT id FROM pipeline_runs WHERE finished_at < ? LIMIT ?)'),
      deleteFinishedBeyond: db.prepare(
        'DELETE FROM pipeline_runs WHERE id IN (SELECT id FROM pipeline_runs WHERE finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT ? OFFSET ?)',
      ),
    };
  }

  private toRun(row: RunRow): PipelineRun {
    return toRun(row, this.s.stepsOf.all(row.id) as StepRow[]);
  }

  runInsertMany(params: { runs: RunInsertParams[]; lease: RunLease; now: number; onRepeat: RepeatCheck }): Promise<{ run: PipelineRun; created: boolean }[]> {
    return this.d.groupCommit.write(() =>
      params.runs.map((r, index) => {
        if (r.idempotencyKey !== null) {
          const existing = this.s.runByKey.get(r.namespace, r.idempotencyKey) as RunRow | undefined;
          if (existing) {
            params.onRepeat({ index, existing: { id: existing.id, requestHash: existing.request_hash } });
            return { run: this.toRun(existing), created: false };
          }
        }
        const row = this.s.runInsert.get({
          namespace: r.namespace,
          pipeline: r.pipeline,
          input: JSON.stringify(r.input ?? null),
          idempotency_key: r.idempotencyKey,
          request_hash: r.requestHash,
          now: params.now,
          owner: params.lease.owner,
          lease_ms: params.lease.leaseMs,
          pipeline_version: r.pipelineVersion,
        }) as RunRow;
        r.steps.forEach((name, i) => this.s.stepInsert.run(row.id, i, name));
        return { run: this.toRun(row), created: true };
      }),
    );
  }

  async runGet(params: { id: number }): Promise<PipelineRun | undefined> {
    const row = this.s.runById.get(params.id) as RunRow | undefined;
    return row && this.toRun(row);
  }

  async runList(params: RunListParams): Promise<Page<PipelineRun>> {
    return mapPage(await this.d.page(lists.runList(params)), (r) => this.toRun(r));
  }

  runAcquire(params: RunLease & { afterId: number; limit: number; now: number }): Promise<PipelineRun[]> {
    return this.d.groupCommit.write(() =>
      (this.s.acquire.all({ owner: params.owner, lease_ms: params.leaseMs, now: params.now, limit: params.limit, after_id: params.afterId }) as RunRow[])
        .sort((a, b) => a.id - b.id)
        .map((r) => this.toRun(r)),
    );
  }

  runRenew(params: RunLease & { ids: number[]; now: number }): Promise<{ id: number; updatedAt: number }[]> {
    return this.d.groupCommit.write(() =>
      (this.s.renew.all({ owner: params.owner, lease_ms: params.leaseMs, now: params.now, ids: JSON.stringify(params.ids) }) as { id: number; updated_at: number }[]).map(
        (r) => ({ id: r.id, updatedAt: r.updated_at }),
      ),
    );
  }

  async runRelease(params: { owner: string; ids: number[] }): Promise<void> {
    await this.d.groupCommit.write(() => this.s.release.run({ owner: params.owner, ids: JSON.stringify(params.ids) }));
  }

  stepStart(params: StepWrite): Promise<PipelineRun | undefined> {
    return this.d.groupCommit.write(() => {
      const run = this.s.runTouch.get({ id: params.runId, status: 'running', now: params.now, owner: params.owner }) as RunRow | undefined;
      if (!run) return undefined;
      if (this.s.stepStart.run({ run_id: params.runId, name: params.step, now: params.now }).changes === 0) {
        throw new FleetError('FLEETD_ERR_RUN_STATE', `step ${params.step} of run ${params.runId} is not pending`);
      }
      return this.toRun(run);
    });
  }

  stepComplete(params: StepWrite & { output: unknown }): Promise<PipelineRun | undefined> {
    return this.d.groupCommit.write(() => {
      const run = this.s.runTouch.get({ id: params.runId, status: 'running', now: params.now, owner: params.owner }) as RunRow | undefined;
      if (!run) return undefined;
      this.s.stepComplete.run({ run_id: params.runId, name: params.step, output: JSON.stringify(params.output ?? null), now: params.now });
      return this.toRun(run);
    });
  }

  stepRetryLater(params: StepWrite & { error: unknown; nextAttemptAt: number }): Promise<PipelineRun | undefined> {
    return this.d.groupCommit.write(() => {
      const run = this.s.runTouch.get({ id: params.runId, status: 'running', now: params.now, owner: params.owner }) as RunRow | undefined;
      if (!run) return undefined;
      this.s.stepRetry.run({ run_id: params.runId, name: params.step, error: JSON.stringify(params.error ?? null), next: params.nextAttemptAt });
      return this.toRun(run);
    });
  }

  stepFail(params: StepWrite & { error: unknown }): Promise<PipelineRun | undefined> {
    return this.d.groupCommit.write(() => {
      const error = JSON.stringify(params.error ?? null);
      const runError = JSON.stringify({ step: params.step, error: params.error ?? null });
      const run = this.s.runFinish.get({ id: params.runId, status: 'failed', output: null, error: runError, now: params.now, owner: params.owner }) as RunRow | undefined;
      if (!run) return undefined;
      this.s.stepFail.run({ run_id: params.runId, name: params.step, error, now: params.now });
      this.s.stepsEnd.run({ run_id: params.runId, status: 'skipped', now: params.now });
      return this.toRun(run);
    });
  }

  runComplete(params: { runId: number; owner: string; output: unknown; now: number }): Promise<PipelineRun | undefined> {
    return this.d.groupCommit.write(() => {
      const output = JSON.stringify(params.output ?? null);
      const run = this.s.runFinish.get({ id: params.runId, status: 'completed', output, error: null, now: params.now, owner: params.owner }) as RunRow | undefined;
      return run && this.toRun(run);
    });
  }

  runCancel(params: { runId: number; now: number }): Promise<PipelineRun | undefined> {
    return this.d.groupCommit.write(() => {
      const run = this.s.runFinish.get({ id: params.runId, status: 'cancelled', output: null, error: null, now: params.now, owner: null }) as RunRow | undefined;
      if (!run) return undefined;
      this.s.stepsEnd.run({ run_id: params.runId, status: 'cancelled', now: params.now });
      return this.toRun(run);
    });
  }

  async runCounts(): Promise<{ pipeline: string; status: RunStatus; count: number }[]> {
    return this.s.counts.all() as { pipeline: string; status: RunStatus; count: number }[];
  }

  runDeleteFinished(params: { before: number; keepNewest?: number; limit: number }): Promise<number> {
    return this.d.groupCommit.write(() => {
      const old = this.s.deleteFinished.run(params.before, params.limit).changes;
      if (params.keepNewest === undefined || old === params.limit) return old;
      return old + this.s.deleteFinishedBeyond.run(params.limit - old, params.keepNewest).changes;
    });
  }

  versionAppend(params: { namespace: string; name: string; definition: unknown; now: number; onlyIfLive?: boolean }): Promise<PipelineVersion | undefined> {
    return this.d.groupCommit.write(() => {
      const newest = this.s.versionNewest.get(params.namespace, params.name) as VersionRow | undefined;
      if (params.onlyIfLive && (newest === undefined || newest.definition === null)) return undefined;
      const definition = params.definition === null ? null : JSON.stringify(params.definition);
      return toVersion(this.s.versionInsert.get(params.namespace, params.name, (newest?.version ?? 0) + 1, definition, params.now) as VersionRow);
    });
  }

  async versionList(params: { namespace: string; name: string; limit: number }): Promise<PipelineVersion[]> {
    return (this.s.versionList.all(params.namespace, params.name, params.limit) as VersionRow[]).map(toVersion);
  }

  async versionGet(params: { namespace: string; name: string; version: number }): Promise<PipelineVersion | undefined> {
    const row = this.s.versionGet.get(params.namespace, params.name, params.version) as VersionRow | undefined;
    return row && toVersion(row);
  }

  async versionCurrent(params: { namespaces?: NamespaceFilter }): Promise<PipelineVersion[]> {
    const namespaces = params.namespaces === undefined ? null : JSON.stringify(params.namespaces);
    return (this.s.versionCurrent.all({ namespaces }) as VersionRow[]).map(toVersion);
  }

  stepAwait(params: StepWrite & { approval: ApprovalWait }): Promise<PipelineRun | undefined> {
    return this.d.groupCommit.write(() => {
      const run = this.s.runTouch.get({ id: params.runId, status: 'running', now: params.now, owner: params.owner }) as RunRow | undefined;
      if (!run) return undefined;
      const changed = this.s.stepAwait.run({ run_id: params.runId, name: params.step, now: params.now, approval: JSON.stringify(params.approval) }).changes;
      if (changed === 0 && this.s.stepIs.get(params.runId, params.step) !== 'waiting') {
        throw new FleetError('FLEETD_ERR_RUN_STATE', `step ${params.step} of run ${params.runId} is not pending`);
      }
      return this.toRun(run);
    });
  }

  stepDecide(params: { runId: number; step: string; approved: boolean; output: unknown; now: number }): Promise<PipelineRun | undefined> {
    return this.d.groupCommit.write(() => {
      const output = JSON.stringify(params.output ?? null);
      const decided = this.s.stepDecide.run({
        run_id: params.runId,
        name: params.step,
        status: params.approved ? 'completed' : 'failed',
        output,
        error: params.approved ? null : output,
        now: params.now,
      }).changes;
      if (decided === 0) return undefined;
      if (params.approved) {
        const run = this.s.runTouchAny.get({ id: params.runId, now: params.now }) as RunRow | undefined;
        return run && this.toRun(run);
      }
      const runError = JSON.stringify({ step: params.step, error: params.output ?? null });
      const run = this.s.runFinish.get({ id: params.runId, status: 'failed', output: null, error: runError, now: params.now, owner: null }) as RunRow | undefined;
      this.s.stepsEnd.run({ run_id: params.runId, status: 'skipped', now: params.now });
      return run && this.toRun(run);
    });
  }
}
