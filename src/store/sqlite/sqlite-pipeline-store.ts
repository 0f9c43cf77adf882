import { createHash } from 'node:crypto';
import type { Database, Statement } from 'better-sqlite3';
import { FleetError } from '../../core/errors.js';
import type { Page } from '../../core/types.js';
import type { PipelineRun, RunStatus, StepState, StepStatus } from '../../pipelines/types.js';
import { decodeCursor, encodeCursor } from '../cursor.js';
import type { PipelineStore, RunInsertParams, RunListParams } from '../pipeline-store.js';
import type { GroupCommit } from './group-commit.js';

interface RunRow {
  id: number;
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
}

interface StepRow {
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
}

const parseJson = (text: string | null): unknown => (text === null ? null : JSON.parse(text));

function toStep(row: StepRow): StepState {
  return {
    name: row.name,
    status: row.status,
    attempts: row.attempts,
    output: parseJson(row.output),
    error: parseJson(row.error),
    startedAt: row.started_at,
    finishedAt: row.finished_at,
    nextAttemptAt: row.next_attempt_at,
  };
}

function requestHash(r: RunInsertParams): string {
  return createHash('sha256').update(JSON.stringify([r.pipeline, r.input])).digest('base64url');
}

/**
 * Pipeline runs in the same SQLite database as the tasks, on the same connection and group commit
 * as the SqliteStore (SQLite has one writer; a second connection would only contend for it).
 */
export class SqlitePipelineStore implements PipelineStore {
  private readonly s: ReturnType<SqlitePipelineStore['prepare']>;
  private readonly dynamic = new Map<string, Statement>();

  constructor(
    private readonly db: Database,
    private readonly groupCommit: GroupCommit,
  ) {
    this.s = this.prepare();
  }

  private prepare() {
    const db = this.db;
    return {
      runInsert: db.prepare(`INSERT INTO pipeline_runs (pipeline, status, input, idempotency_key, request_hash, created_at, updated_at)
        VALUES (@pipeline, 'queued', @input, @idempotency_key, @request_hash, @now, @now) RETURNING *`),
      stepInsert: db.prepare("INSERT INTO pipeline_steps (run_id, position, name, status) VALUES (?, ?, ?, 'pending')"),
      runByKey: db.prepare('SELECT * FROM pipeline_runs WHERE idempotency_key = ?'),
      runById: db.prepare('SELECT * FROM pipeline_runs WHERE id = ?'),
      stepsOf: db.prepare('SELECT * FROM pipeline_steps WHERE run_id = ? ORDER BY position'),
      unfinished: db.prepare("SELECT * FROM pipeline_runs WHERE status IN ('queued', 'running') AND id > ? ORDER BY id LIMIT ?"),
      runTouch: db.prepare(`UPDATE pipeline_runs SET status = @status, updated_at = @now WHERE id = @id
        AND status IN ('queued', 'running') RETURNING *`),
      runFinish: db.prepare(`UPDATE pipeline_runs SET status = @status, output = @output, error = @error, updated_at = @now,
        finished_at = @now WHERE id = @id AND status IN ('queued', 'running') RETURNING *`),
      stepStart: db.prepare(`UPDATE pipeline_steps SET status = 'running', attempts = attempts + (status = 'pending'), started_at = @now,
        next_attempt_at = NULL WHERE run_id = @run_id AND name = @name AND status IN ('pending', 'running')`),
      stepComplete: db.prepare(`UPDATE pipeline_steps SET status = 'completed', output = @output, error = NULL, finished_at = @now
        WHERE run_id = @run_id AND name = @name AND status = 'running'`),
      stepRetry: db.prepare(`UPDATE pipeline_steps SET status = 'pending', error = @error, next_attempt_at = @next
        WHERE run_id = @run_id AND name = @name AND status = 'running'`),
      stepFail: db.prepare(`UPDATE pipeline_steps SET status = 'failed', error = @error, finished_at = @now
        WHERE run_id = @run_id AND name = @name`),
      stepsEnd: db.prepare(`UPDATE pipeline_steps SET status = @status, finished_at = @now
        WHERE run_id = @run_id AND status IN ('pending', 'running')`),
      counts: db.prepare('SELECT pipeline, status, n AS count FROM pipeline_run_counts WHERE n > 0'),
    };
  }

  private toRun(row: RunRow): PipelineRun {
    return {
      id: row.id,
      pipeline: row.pipeline,
      status: row.status,
      input: JSON.parse(row.input),
      output: parseJson(row.output),
      error: parseJson(row.error),
      idempotencyKey: row.idempotency_key,
      createdAt: row.created_at,
      updatedAt: row.updated_at,
      finishedAt: row.finished_at,
      steps: (this.s.stepsOf.all(row.id) as StepRow[]).map(toStep),
    };
  }

  runInsertMany(params: { runs: RunInsertParams[]; now: number }): Promise<{ run: PipelineRun; created: boolean }[]> {
    return this.groupCommit.write(() =>
      params.runs.map((r) => {
        const hash = r.idempotencyKey === null ? null : requestHash(r);
        if (r.idempotencyKey !== null) {
          const existing = this.s.runByKey.get(r.idempotencyKey) as RunRow | undefined;
          if (existing) {
            if (existing.request_hash !== hash) {
              throw new FleetError(
                'FLEETD_ERR_IDEMPOTENCY_CONFLICT',
                `idempotency key ${r.idempotencyKey} was already used for a different run`,
                { idempotencyKey: r.idempotencyKey, runId: existing.id },
              );
            }
            return { run: this.toRun(existing), created: false };
          }
        }
        const row = this.s.runInsert.get({
          pipeline: r.pipeline,
          input: JSON.stringify(r.input ?? null),
          idempotency_key: r.idempotencyKey,
          request_hash: hash,
          now: params.now,
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
    const before = decodeCursor(params.cursor);
    const where: string[] = [];
    const args: unknown[] = [];
    if (params.pipeline !== undefined) {
      where.push('pipeline = ?');
      args.push(params.pipeline);
    }
    if (params.status !== undefined) {
      where.push('status = ?');
      args.push(params.status);
    }
    if (before !== undefined) {
      where.push('id < ?');
      args.push(before);
    }
    const sql = `SELECT * FROM pipeline_runs ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id DESC LIMIT ?`;
    let stmt = this.dynamic.get(sql);
    if (!stmt) {
      stmt = this.db.prepare(sql);
      this.dynamic.set(sql, stmt);
    }
    const rows = stmt.all(...args, params.limit + 1) as RunRow[];
    const more = rows.length > params.limit;
    const items = (more ? rows.slice(0, params.limit) : rows).map((r) => this.toRun(r));
    return { items, nextCursor: more ? encodeCursor(items[items.length - 1].id) : null };
  }

  async runListUnfinished(params: { afterId: number; limit: number }): Promise<PipelineRun[]> {
    return (this.s.unfinished.all(params.afterId, params.limit) as RunRow[]).map((r) => this.toRun(r));
  }

  stepStart(params: { runId: number; step: string; now: number }): Promise<PipelineRun | undefined> {
    return this.groupCommit.write(() => {
      const run = this.s.runTouch.get({ id: params.runId, status: 'running', now: params.now }) as RunRow | undefined;
      if (!run) return undefined;
      if (this.s.stepStart.run({ run_id: params.runId, name: params.step, now: params.now }).changes === 0) {
        throw new FleetError('FLEETD_ERR_RUN_STATE', `step ${params.step} of run ${params.runId} is not pending`);
      }
      return this.toRun(run);
    });
  }

  stepComplete(params: { runId: number; step: string; output: unknown; now: number }): Promise<PipelineRun | undefined> {
    return this.groupCommit.write(() => {
      const run = this.s.runTouch.get({ id: params.runId, status: 'running', now: params.now }) as RunRow | undefined;
      if (!run) return undefined;
      this.s.stepComplete.run({ run_id: params.runId, name: params.step, output: JSON.stringify(params.output ?? null), now: params.now });
      return this.toRun(run);
    });
  }

  stepRetryLater(params: { runId: number; step: string; error: unknown; nextAttemptAt: number; now: number }): Promise<PipelineRun | undefined> {
    return this.groupCommit.write(() => {
      const run = this.s.runTouch.get({ id: params.runId, status: 'running', now: params.now }) as RunRow | undefined;
      if (!run) return undefined;
      this.s.stepRetry.run({ run_id: params.runId, name: params.step, error: JSON.stringify(params.error ?? null), next: params.nextAttemptAt });
      return this.toRun(run);
    });
  }

  stepFail(params: { runId: number; step: string; error: unknown; now: number }): Promise<PipelineRun | undefined> {
    return this.groupCommit.write(() => {
      const error = JSON.stringify(params.error ?? null);
      const runError = JSON.stringify({ step: params.step, error: params.error ?? null });
      const run = this.s.runFinish.get({ id: params.runId, status: 'failed', output: null, error: runError, now: params.now }) as RunRow | undefined;
      if (!run) return undefined;
      this.s.stepFail.run({ run_id: params.runId, name: params.step, error, now: params.now });
      this.s.stepsEnd.run({ run_id: params.runId, status: 'skipped', now: params.now });
      return this.toRun(run);
    });
  }

  runComplete(params: { runId: number; output: unknown; now: number }): Promise<PipelineRun | undefined> {
    return this.groupCommit.write(() => {
      const output = JSON.stringify(params.output ?? null);
      const run = this.s.runFinish.get({ id: params.runId, status: 'completed', output, error: null, now: params.now }) as RunRow | undefined;
      return run && this.toRun(run);
    });
  }

  runCancel(params: { runId: number; now: number }): Promise<PipelineRun | undefined> {
    return this.groupCommit.write(() => {
      const run = this.s.runFinish.get({ id: params.runId, status: 'cancelled', output: null, error: null, now: params.now }) as RunRow | undefined;
      if (!run) return undefined;
      this.s.stepsEnd.run({ run_id: params.runId, status: 'cancelled', now: params.now });
      return this.toRun(run);
    });
  }

  async runCounts(): Promise<{ pipeline: string; status: RunStatus; count: number }[]> {
    return this.s.counts.all() as { pipeline: string; status: RunStatus; count: number }[];
  }
}
