import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import Database, { type Statement } from 'better-sqlite3';
import { FleetError, notFound } from '../../domain/errors.js';
import type { Agent, AgentCount, AgentStatus, ApiKey, Lock, Page, Task, TaskCount, TaskStatus } from '../../domain/types.js';
import { decodeCursor } from '../cursor.js';
import { requirementKey, requirementsOf } from '../../domain/requirements.js';
import {
  type AgentCreateParams,
  type AgentHeartbeatResult,
  type AgentListParams,
  type AgentReleaseResult,
  type ApiKeyInsertParams,
  type LockAcquireParams,
  type LockAcquireResult,
  type LockListParams,
  type Store,
  type TaskClaimParams,
  type TaskClaimResult,
  type TaskFailParams,
  type TaskInsertParams,
  type TaskInsertResult,
  type TaskListParams,
  type TaskTransition,
} from '../store.js';
import { page, requestHash, toApiKey, toLock, toTask, type ApiKeyRow, type LockRow, type TaskRow } from '../rows.js';
import { GroupCommit } from './group-commit.js';
import { migrations } from './migrations.js';

export interface SqliteStoreOptions {
  /** Folder for fleetd.db; created if missing. `:memory:` keeps everything in memory (tests only). */
  dataDir: string;
  /**
   * SQLite's `synchronous` pragma. NORMAL (default) survives a crash of fleetd (kill -9) with no
   * loss; FULL also survives power loss, at the cost of an fsync on every commit.
   */
  synchronous?: 'NORMAL' | 'FULL';
}

interface AgentRow {
  seq: number;
  id: string;
  name: string;
  capabilities: string;
  labels: string;
  max_concurrency: number;
  token_hash: string;
  status: AgentStatus;
  created_at: number;
  last_heartbeat_at: number;
}

function toAgent(row: AgentRow): Agent {
  return {
    id: row.id,
    name: row.name,
    capabilities: JSON.parse(row.capabilities),
    labels: JSON.parse(row.labels),
    maxConcurrency: row.max_concurrency,
    status: row.status,
    createdAt: row.created_at,
    lastHeartbeatAt: row.last_heartbeat_at,
  };
}

/**
 * The embedded default store: one long-lived better-sqlite3 connection in WAL mode, statements
 * prepared once, and group commit for writes. Reads run at once on the same connection; they see
 * only committed data because a group's transaction opens and commits inside one synchronous flush.
 */
export class SqliteStore implements Store {
  readonly driver = 'sqlite';
  readonly supportsListen = false;
  readonly db: Database.Database;
  readonly groupCommit: GroupCommit;
  private readonly s: ReturnType<SqliteStore['prepare']>;
  private readonly dynamic = new Map<string, Statement>();

  constructor(options: SqliteStoreOptions) {
    const file = options.dataDir === ':memory:' ? ':memory:' : join(options.dataDir, 'fleetd.db');
    if (file !== ':memory:') mkdirSync(options.dataDir, { recursive: true });
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma(`synchronous = ${options.synchronous ?? 'NORMAL'}`);
    this.db.pragma('foreign_keys = ON');
    this.db.pragma('temp_store = MEMORY');
    this.db.pragma('cache_size = -65536');
    this.db.pragma('busy_timeout = 5000');
    this.runMigrations();
    this.groupCommit = new GroupCommit(this.db);
    this.s = this.prepare();
  }

  private runMigrations(): void {
    this.db.exec('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)');
    const applied = new Set(this.db.prepare('SELECT version FROM schema_migrations').pluck().all() as number[]);
    for (const m of migrations) {
      if (applied.has(m.version)) continue;
      this.db.transaction(() => {
        this.db.exec(m.sql);
        this.db.prepare('INSERT INTO schema_migrations VALUES (?, ?, ?)').run(m.version, m.name, Date.now());
      })();
    }
  }

  private prepare() {
    const db = this.db;
    return {
      taskInsert: db.prepare(`INSERT INTO tasks (type, req_key, payload, priority, status, idempotency_key, request_hash,
          max_attempts, lease_ms, backoff_ms, run_at, created_at, updated_at)
        VALUES (@type, @req_key, @payload, @priority, @status, @idempotency_key, @request_hash,
          @max_attempts, @lease_ms, @backoff_ms, @run_at, @now, @now) RETURNING *`),
      taskByKey: db.prepare('SELECT * FROM tasks WHERE idempotency_key = ?'),
      taskById: db.prepare('SELECT * FROM tasks WHERE id = ?'),
      queuedKeys: db.prepare("SELECT DISTINCT req_key FROM task_counts WHERE status = 'queued' AND n > 0").pluck(),
      claimCandidates: db.prepare(
        "SELECT id, priority FROM tasks WHERE status = 'queued' AND req_key = ? ORDER BY priority DESC, id LIMIT ?",
      ),
      lease: db.prepare(`UPDATE tasks SET status = 'leased', agent_id = @agent_id, attempts = attempts + 1,
          claimed_at = @now, updated_at = @now, lease_expires_at = @now + lease_ms
        WHERE id = @id AND status = 'queued' RETURNING *`),
      inFlight: db.prepare("SELECT count(*) FROM tasks WHERE agent_id = ? AND status = 'leased'").pluck(),
      leasedTo: db.prepare("SELECT * FROM tasks WHERE agent_id = ? AND status = 'leased'"),
      complete: db.prepare(`UPDATE tasks SET status = 'completed', result = @result, completed_at = @now,
          updated_at = @now, lease_expires_at = NULL
        WHERE id = @id AND status = 'leased' AND agent_id = @agent_id RETURNING *`),
      requeue: db.prepare(`UPDATE tasks SET status = @status, run_at = @run_at, error = @error, updated_at = @now,
          lease_expires_at = NULL WHERE id = @id RETURNING *`),
      bury: db.prepare(`UPDATE tasks SET status = 'dead', error = @error, completed_at = @now, updated_at = @now,
          lease_expires_at = NULL WHERE id = @id RETURNING *`),
      extend: db.prepare(`UPDATE tasks SET lease_expires_at = @now + coalesce(@lease_ms, lease_ms), updated_at = @now
        WHERE id = @id AND status = 'leased' AND agent_id = @agent_id RETURNING *`),
      cancel: db.prepare(`UPDATE tasks SET status = 'cancelled', completed_at = @now, updated_at = @now,
          lease_expires_at = NULL WHERE id = @id RETURNING *`),
      retry: db.prepare(`UPDATE tasks SET status = 'queued', attempts = 0, run_at = @now, updated_at = @now,
          completed_at = NULL, result = NULL, error = NULL, lease_expires_at = NULL WHERE id = @id RETURNING *`),
      expiredLeases: db.prepare(
        "SELECT * FROM tasks WHERE status = 'leased' AND lease_expires_at <= ? ORDER BY lease_expires_at LIMIT ?",
      ),
      dueScheduled: db.prepare(
        "UPDATE tasks SET status = 'queued', updated_at = @now WHERE id IN (SELECT id FROM tasks WHERE status = 'scheduled' AND run_at <= @now ORDER BY run_at LIMIT @limit) RETURNING *",
      ),
      deleteFinished: db.prepare(
        'DELETE FROM tasks WHERE id IN (SELECT id FROM tasks WHERE completed_at IS NOT NULL AND completed_at < ? LIMIT ?)',
      ),
      deleteFinishedBeyond: db.prepare(
        'DELETE FROM tasks WHERE id IN (SELECT id FROM tasks WHERE completed_at IS NOT NULL ORDER BY completed_at DESC LIMIT ? OFFSET ?)',
      ),
      nextLeaseExpiry: db.prepare("SELECT min(lease_expires_at) FROM tasks WHERE status = 'leased'").pluck(),
      nextRunAt: db.prepare("SELECT min(run_at) FROM tasks WHERE status = 'scheduled'").pluck(),
      taskCounts: db.prepare('SELECT type, priority, status, sum(n) AS count FROM task_counts WHERE n > 0 GROUP BY type, priority, status'),

      agentInsert: db.prepare(`INSERT INTO agents (id, name, capabilities, labels, max_concurrency, token_hash, status,
          created_at, last_heartbeat_at) VALUES (@id, @name, @capabilities, @labels, @max_concurrency, @token_hash,
          'online', @now, @now) RETURNING *`),
      agentCapabilityInsert: db.prepare('INSERT OR IGNORE INTO agent_capabilities (capability, agent_seq) VALUES (?, ?)'),
      agentById: db.prepare('SELECT * FROM agents WHERE id = ?'),
      agentHeartbeat: db.prepare(
        "UPDATE agents SET last_heartbeat_at = @now, status = 'online' WHERE id = @id RETURNING *",
      ),
      agentMarkStale: db.prepare(`UPDATE agents SET status = 'stale' WHERE seq IN (SELECT seq FROM agents
          WHERE status = 'online' AND last_heartbeat_at < @before LIMIT @limit) RETURNING id`).pluck(),
      agentsToReap: db.prepare(`SELECT * FROM agents WHERE status IN ('online', 'stale') AND last_heartbeat_at < ?
          ORDER BY last_heartbeat_at LIMIT ?`),
      agentSetOffline: db.prepare("UPDATE agents SET status = 'offline' WHERE id = ? RETURNING *"),
      agentDelete: db.prepare('DELETE FROM agents WHERE id = ?'),
      agentOldestHeartbeat: db.prepare('SELECT min(last_heartbeat_at) FROM agents WHERE status = ?').pluck(),
      agentCounts: db.prepare('SELECT status, n AS count FROM agent_counts'),

      lockHolders: db.prepare(`SELECT lr.resource, l.id AS lock_id, l.agent_id, l.expires_at, l.seq FROM lock_resources lr
          JOIN locks l ON l.seq = lr.lock_seq WHERE lr.resource = ?`),
      lockInsert: db.prepare(`INSERT INTO locks (id, agent_id, resources, description, created_at, expires_at)
          VALUES (@id, @agent_id, @resources, @description, @now, @expires_at) RETURNING *`),
      lockResourceInsert: db.prepare('INSERT INTO lock_resources (resource, lock_seq) VALUES (?, ?)'),
      lockById: db.prepare('SELECT * FROM locks WHERE id = ?'),
      lockDeleteBySeq: db.prepare('DELETE FROM locks WHERE seq = ? RETURNING *'),
      locksOfAgent: db.prepare('DELETE FROM locks WHERE agent_id = ? RETURNING *'),
      expiredLocks: db.prepare(
        'DELETE FROM locks WHERE seq IN (SELECT seq FROM locks WHERE expires_at <= ? ORDER BY expires_at LIMIT ?) RETURNING *',
      ),
      nextLockExpiry: db.prepare('SELECT min(expires_at) FROM locks').pluck(),
      agentIdByTokenHash: db.prepare('SELECT id FROM agents WHERE token_hash = ?').pluck(),
      apiKeyInsert: db.prepare(`INSERT INTO api_keys (id, name, scope, hash, created_at) SELECT @id, @name, @scope, @hash, @now
          WHERE @only_if_none = 0 OR NOT EXISTS (SELECT 1 FROM api_keys) RETURNING *`),
      apiKeyByHash: db.prepare('SELECT * FROM api_keys WHERE hash = ? AND revoked_at IS NULL'),
      apiKeyList: db.prepare('SELECT * FROM api_keys ORDER BY created_at, id'),
      apiKeyRevoke: db.prepare('UPDATE api_keys SET revoked_at = coalesce(revoked_at, @now) WHERE id = @id RETURNING *'),
      ping: db.prepare('SELECT 1').pluck(),
    };
  }

  private statement(sql: string): Statement {
    let stmt = this.dynamic.get(sql);
    if (!stmt) {
      stmt = this.db.prepare(sql);
      this.dynamic.set(sql, stmt);
    }
    return stmt;
  }

  async migrate(): Promise<void> {
    // Migrations run in the constructor so that the prepared statements see the final schema.
  }

  async ping(): Promise<void> {
    this.s.ping.get();
  }

  async close(): Promise<void> {
    this.groupCommit.flush();
    if (this.db.open) this.db.close();
  }

  // ---- agents ----

  agentCreateMany(params: AgentCreateParams[]): Promise<Agent[]> {
    return this.groupCommit.write(() =>
      params.map((p) => {
        const row = this.s.agentInsert.get({
          id: p.id,
          name: p.name,
          capabilities: JSON.stringify(p.capabilities),
          labels: JSON.stringify(p.labels),
          max_concurrency: p.maxConcurrency,
          token_hash: p.tokenHash,
          now: p.now,
        }) as AgentRow;
        for (const c of p.capabilities) this.s.agentCapabilityInsert.run(c, row.seq);
        return toAgent(row);
      }),
    );
  }

  async agentGet(params: { id: string }): Promise<Agent | undefined> {
    const row = this.s.agentById.get(params.id) as AgentRow | undefined;
    return row && toAgent(row);
  }

  async agentIdByTokenHash(params: { hash: string }): Promise<string | undefined> {
    return this.s.agentIdByTokenHash.get(params.hash) as string | undefined;
  }

  async agentList(params: AgentListParams): Promise<Page<Agent>> {
    const byCapability = params.capability !== undefined;
    return this.listPage<AgentRow, Agent>({
      select: byCapability ? 'SELECT a.* FROM agent_capabilities c JOIN agents a ON a.seq = c.agent_seq' : 'SELECT a.* FROM agents a',
      conditions: [
        ['c.capability = ?', params.capability],
        ['a.status = ?', params.status],
        ['a.seq > ?', decodeCursor(params.cursor)],
      ],
      orderBy: 'a.seq',
      limit: params.limit,
      map: toAgent,
      key: (r) => r.seq,
    });
  }

  /** A keyset-paginated list; conditions whose value is undefined are left out. */
  private listPage<R, T>(q: {
    select: string;
    conditions: [sql: string, value: unknown][];
    orderBy: string;
    limit: number;
    map: (row: R) => T;
    key: (row: R) => number;
  }): Page<T> {
    const present = q.conditions.filter(([, value]) => value !== undefined);
    const where = present.length > 0 ? ` WHERE ${present.map(([sql]) => sql).join(' AND ')}` : '';
    const sql = `${q.select}${where} ORDER BY ${q.orderBy} LIMIT ?`;
    const rows = this.statement(sql).all(...present.map(([, value]) => value), q.limit + 1) as R[];
    return page(rows, q.limit, q.map, q.key);
  }

  agentHeartbeat(params: { id: string; now: number }): Promise<AgentHeartbeatResult | undefined> {
    return this.groupCommit.write(() => {
      const before = this.s.agentById.get(params.id) as AgentRow | undefined;
      if (!before) return undefined;
      const row = this.s.agentHeartbeat.get(params) as AgentRow;
      return { agent: toAgent(row), previousStatus: before.status };
    });
  }

  agentMarkStale(params: { staleBefore: number; now: number; limit: number }): Promise<string[]> {
    return this.groupCommit.write(
      () => this.s.agentMarkStale.all({ before: params.staleBefore, limit: params.limit }) as string[],
    );
  }

  agentReapOffline(params: { offlineBefore: number; now: number; limit: number }): Promise<AgentReleaseResult[]> {
    return this.groupCommit.write(() => {
      const rows = this.s.agentsToReap.all(params.offlineBefore, params.limit) as AgentRow[];
      return rows.map((row) => {
        const released = this.releaseAgent(row.id, params.now);
        return { agent: toAgent(this.s.agentSetOffline.get(row.id) as AgentRow), ...released };
      });
    });
  }

  agentDelete(params: { id: string; now: number }): Promise<AgentReleaseResult | undefined> {
    return this.groupCommit.write(() => {
      const row = this.s.agentById.get(params.id) as AgentRow | undefined;
      if (!row) return undefined;
      const released = this.releaseAgent(row.id, params.now);
      this.s.agentDelete.run(row.id);
      return { agent: toAgent(row), ...released };
    });
  }

  agentRelease(params: { id: string; now: number }): Promise<AgentReleaseResult | undefined> {
    return this.groupCommit.write(() => {
      const row = this.s.agentById.get(params.id) as AgentRow | undefined;
      if (!row) return undefined;
      const released = this.releaseAgent(row.id, params.now);
      return { agent: toAgent(this.s.agentSetOffline.get(row.id) as AgentRow), ...released };
    });
  }

  /** Inside a write: every task leased to the agent goes back (or dies), every lock it holds goes. */
  private releaseAgent(agentId: string, now: number): { tasks: TaskTransition[]; locks: Lock[] } {
    const leased = this.s.leasedTo.all(agentId) as TaskRow[];
    const tasks = leased.map((row) => this.returnLease(row, now, { code: 'AGENT_OFFLINE', message: `agent ${agentId} went offline` }));
    const locks = (this.s.locksOfAgent.all(agentId) as LockRow[]).map(toLock);
    return { tasks, locks };
  }

  /** A lease that ended without a result: the task is queued again, or buried once its attempts are spent. */
  private returnLease(row: TaskRow, now: number, error: { code: string; message: string }): TaskTransition {
    const errorJson = JSON.stringify(error);
    const next =
      row.attempts >= row.max_attempts
        ? this.s.bury.get({ id: row.id, error: errorJson, now })
        : this.s.requeue.get({ id: row.id, status: 'queued', run_at: now, error: errorJson, now });
    return { task: toTask(next as TaskRow), from: row.status };
  }

  async agentOldestHeartbeat(params: { status: AgentStatus }): Promise<number | null> {
    return this.s.agentOldestHeartbeat.get(params.status) as number | null;
  }

  async agentCounts(): Promise<AgentCount[]> {
    return this.s.agentCounts.all() as AgentCount[];
  }

  // ---- tasks ----

  taskInsertMany(params: { tasks: TaskInsertParams[]; now: number }): Promise<TaskInsertResult[]> {
    return this.groupCommit.write(() =>
      params.tasks.map((t) => {
        const hash = t.idempotencyKey === null ? null : requestHash(t);
        if (t.idempotencyKey !== null) {
          const existing = this.s.taskByKey.get(t.idempotencyKey) as TaskRow | undefined;
          if (existing) {
            if (existing.request_hash !== hash) {
              throw new FleetError(
                'FLEETD_ERR_IDEMPOTENCY_CONFLICT',
                `idempotency key ${t.idempotencyKey} was already used for a different task`,
                { idempotencyKey: t.idempotencyKey, taskId: existing.id },
              );
            }
            return { task: toTask(existing), created: false };
          }
        }
        const row = this.s.taskInsert.get({
          type: t.type,
          req_key: requirementKey(t.requires),
          payload: JSON.stringify(t.payload),
          priority: t.priority,
          status: t.runAt > params.now ? 'scheduled' : 'queued',
          idempotency_key: t.idempotencyKey,
          request_hash: hash,
          max_attempts: t.maxAttempts,
          lease_ms: t.leaseMs,
          backoff_ms: t.backoffMs,
          run_at: t.runAt,
          now: params.now,
        }) as TaskRow;
        return { task: toTask(row), created: true };
      }),
    );
  }

  async taskGet(params: { id: number }): Promise<Task | undefined> {
    const row = this.s.taskById.get(params.id) as TaskRow | undefined;
    return row && toTask(row);
  }

  async taskList(params: TaskListParams): Promise<Page<Task>> {
    const cursor = decodeCursor(params.cursor);
    const asc = params.order === 'asc';
    return this.listPage<TaskRow, Task>({
      select: 'SELECT * FROM tasks',
      conditions: [
        ['status = ?', params.status],
        ['type = ?', params.type],
        ['agent_id = ?', params.agentId],
        [asc ? 'id > ?' : 'id < ?', cursor],
      ],
      orderBy: asc ? 'id ASC' : 'id DESC',
      limit: params.limit,
      map: toTask,
      key: (r) => r.id,
    });
  }

  taskClaim(params: TaskClaimParams): Promise<TaskClaimResult> {
    return this.groupCommit.write(() => {
      const agentRow = this.s.agentById.get(params.agentId) as AgentRow | undefined;
      if (!agentRow) throw notFound('agent', params.agentId);
      // A claim is a sign of life: it counts as a heartbeat. Within a second of the last one the
      // write is skipped; staleness is measured in tens of seconds.
      const fresh = agentRow.status === 'online' && params.now - agentRow.last_heartbeat_at < 1_000;
      const agent = toAgent(fresh ? agentRow : (this.s.agentHeartbeat.get({ id: params.agentId, now: params.now }) as AgentRow));
      const free = agent.maxConcurrency - (this.s.inFlight.get(params.agentId) as number);
      const room = Math.min(params.max, free);
      if (room <= 0) return { agent, previousStatus: agentRow.status, tasks: [], room: 0 };
      const capabilities = new Set(agent.capabilities);
      // SQLite cannot merge several index ranges in priority order under one LIMIT, so the claim
      // seeks each claimable requirement set's index range (few rows each) and merges them here.
      let candidates: { id: number; priority: number }[] = [];
      for (const key of this.s.queuedKeys.all() as string[]) {
        if (!requirementsOf(key).every((c) => capabilities.has(c))) continue;
        candidates = candidates.concat(this.s.claimCandidates.all(key, room) as { id: number; priority: number }[]);
      }
      candidates.sort((a, b) => b.priority - a.priority || a.id - b.id);
      const tasks: Task[] = [];
      for (const c of candidates.slice(0, room)) {
        const row = this.s.lease.get({ id: c.id, agent_id: params.agentId, now: params.now }) as TaskRow | undefined;
        if (row) tasks.push(toTask(row));
      }
      return { agent, previousStatus: agentRow.status, tasks, room: free - tasks.length };
    });
  }

  /** Inside a write: the row, if the agent still holds its lease; otherwise throws the reason it does not. */
  private leasedRow(id: number, agentId: string): TaskRow {
    const row = this.s.taskById.get(id) as TaskRow | undefined;
    if (!row) throw notFound('task', id);
    if (row.status !== 'leased' || row.agent_id !== agentId) {
      throw new FleetError('FLEETD_ERR_LEASE_LOST', `agent ${agentId} does not hold the lease on task ${id}`, {
        taskId: id,
        status: row.status,
        holder: row.status === 'leased' ? row.agent_id : null,
      });
    }
    return row;
  }

  /** Why a conditional write on a lease matched no row: the task is gone, or the agent does not hold it. */
  private leaseRefused(id: number, agentId: string): never {
    this.leasedRow(id, agentId);
    throw new Error(`task ${id}: the lease held by ${agentId} matched no row`);
  }

  taskComplete(params: { id: number; agentId: string; result: unknown; now: number }): Promise<Task> {
    return this.groupCommit.write(() => {
      // One statement on the happy path; only a refused completion reads the row to say why.
      const row = this.s.complete.get({
        id: params.id,
        agent_id: params.agentId,
        result: JSON.stringify(params.result ?? null),
        now: params.now,
      }) as TaskRow | undefined;
      return row ? toTask(row) : this.leaseRefused(params.id, params.agentId);
    });
  }

  taskFail(params: TaskFailParams): Promise<Task> {
    return this.groupCommit.write(() => {
      const row = this.leasedRow(params.id, params.agentId);
      const error = JSON.stringify(params.error ?? null);
      if (!params.retryable || row.attempts >= row.max_attempts) {
        return toTask(this.s.bury.get({ id: row.id, error, now: params.now }) as TaskRow);
      }
      const runAt = params.retryDelay(row.attempts, row.backoff_ms) + params.now;
      const status: TaskStatus = runAt > params.now ? 'scheduled' : 'queued';
      return toTask(this.s.requeue.get({ id: row.id, status, run_at: runAt, error, now: params.now }) as TaskRow);
    });
  }

  taskExtendLease(params: { id: number; agentId: string; leaseMs?: number; now: number }): Promise<Task> {
    return this.groupCommit.write(() => {
      const row = this.s.extend.get({
        id: params.id,
        agent_id: params.agentId,
        lease_ms: params.leaseMs ?? null,
        now: params.now,
      }) as TaskRow | undefined;
      return row ? toTask(row) : this.leaseRefused(params.id, params.agentId);
    });
  }

  taskCancel(params: { id: number; now: number }): Promise<Task> {
    return this.groupCommit.write(() => {
      const row = this.s.taskById.get(params.id) as TaskRow | undefined;
      if (!row) throw notFound('task', params.id);
      if (row.status === 'completed' || row.status === 'dead' || row.status === 'cancelled') {
        throw new FleetError('FLEETD_ERR_TASK_STATE', `task ${params.id} is ${row.status} and cannot be cancelled`, {
          taskId: params.id,
          status: row.status,
        });
      }
      return toTask(this.s.cancel.get(params) as TaskRow);
    });
  }

  taskRetry(params: { id: number; now: number }): Promise<Task> {
    return this.groupCommit.write(() => {
      const row = this.s.taskById.get(params.id) as TaskRow | undefined;
      if (!row) throw notFound('task', params.id);
      if (row.status !== 'dead' && row.status !== 'cancelled') {
        throw new FleetError('FLEETD_ERR_TASK_STATE', `task ${params.id} is ${row.status}; only dead or cancelled tasks can be retried`, {
          taskId: params.id,
          status: row.status,
        });
      }
      return toTask(this.s.retry.get(params) as TaskRow);
    });
  }

  taskRescueExpiredLeases(params: { now: number; limit: number }): Promise<TaskTransition[]> {
    return this.groupCommit.write(() =>
      (this.s.expiredLeases.all(params.now, params.limit) as TaskRow[]).map((row) =>
        this.returnLease(row, params.now, { code: 'LEASE_EXPIRED', message: `lease held by ${row.agent_id} expired` }),
      ),
    );
  }

  taskPromoteScheduled(params: { now: number; limit: number }): Promise<TaskTransition[]> {
    return this.groupCommit.write(() =>
      (this.s.dueScheduled.all(params) as TaskRow[]).map((row) => ({ task: toTask(row), from: 'scheduled' as const })),
    );
  }

  taskDeleteFinished(params: { before: number; keepNewest?: number; limit: number }): Promise<number> {
    return this.groupCommit.write(() => {
      const old = this.s.deleteFinished.run(params.before, params.limit).changes;
      if (params.keepNewest === undefined || old === params.limit) return old;
      return old + this.s.deleteFinishedBeyond.run(params.limit - old, params.keepNewest).changes;
    });
  }

  async taskNextDeadlines(): Promise<{ leaseExpiresAt: number | null; runAt: number | null }> {
    return {
      leaseExpiresAt: this.s.nextLeaseExpiry.get() as number | null,
      runAt: this.s.nextRunAt.get() as number | null,
    };
  }

  async taskCounts(): Promise<TaskCount[]> {
    return this.s.taskCounts.all() as TaskCount[];
  }

  // ---- locks ----

  lockAcquire(params: LockAcquireParams): Promise<LockAcquireResult> {
    return this.groupCommit.write((): LockAcquireResult => {
      const conflicts: { resource: string; lockId: string; agentId: string; expiresAt: number }[] = [];
      const expired = new Set<number>();
      for (const resource of params.resources) {
        const holder = this.s.lockHolders.get(resource) as
          | { resource: string; lock_id: string; agent_id: string; expires_at: number; seq: number }
          | undefined;
        if (!holder) continue;
        if (holder.expires_at <= params.now) expired.add(holder.seq);
        else conflicts.push({ resource, lockId: holder.lock_id, agentId: holder.agent_id, expiresAt: holder.expires_at });
      }
      if (conflicts.length > 0) return { acquired: false, conflicts };
      // A lock past its TTL that the expirer has not reached yet no longer holds anything.
      for (const seq of expired) this.s.lockDeleteBySeq.run(seq);
      const row = this.s.lockInsert.get({
        id: params.id,
        agent_id: params.agentId,
        resources: JSON.stringify(params.resources),
        description: params.description,
        now: params.now,
        expires_at: params.now + params.ttlMs,
      }) as LockRow;
      for (const resource of params.resources) this.s.lockResourceInsert.run(resource, row.seq);
      return { acquired: true, lock: toLock(row) };
    });
  }

  lockRelease(params: { id: string; agentId?: string }): Promise<Lock | undefined> {
    return this.groupCommit.write(() => {
      const row = this.s.lockById.get(params.id) as LockRow | undefined;
      if (!row) return undefined;
      if (params.agentId !== undefined && row.agent_id !== params.agentId) {
        throw new FleetError('FLEETD_ERR_FORBIDDEN', `lock ${params.id} is held by another agent`, { lockId: params.id });
      }
      return toLock(this.s.lockDeleteBySeq.get(row.seq) as LockRow);
    });
  }

  async lockGet(params: { id: string }): Promise<Lock | undefined> {
    const row = this.s.lockById.get(params.id) as LockRow | undefined;
    return row && toLock(row);
  }

  async lockList(params: LockListParams): Promise<Page<Lock>> {
    return this.listPage<LockRow, Lock>({
      select: 'SELECT * FROM locks',
      conditions: [
        ['agent_id = ?', params.agentId],
        ['seq > ?', decodeCursor(params.cursor)],
      ],
      orderBy: 'seq',
      limit: params.limit,
      map: toLock,
      key: (r) => r.seq,
    });
  }

  lockExpire(params: { now: number; limit: number }): Promise<Lock[]> {
    return this.groupCommit.write(() => (this.s.expiredLocks.all(params.now, params.limit) as LockRow[]).map(toLock));
  }

  async lockNextExpiry(): Promise<number | null> {
    return this.s.nextLockExpiry.get() as number | null;
  }

  // ---- API keys ----

  apiKeyInsert(params: ApiKeyInsertParams): Promise<ApiKey | undefined> {
    return this.groupCommit.write(() => {
      const row = this.s.apiKeyInsert.get({
        id: params.id,
        name: params.name,
        scope: params.scope,
        hash: params.hash,
        now: params.now,
        only_if_none: params.onlyIfNone ? 1 : 0,
      }) as ApiKeyRow | undefined;
      return row && toApiKey(row);
    });
  }

  async apiKeyByHash(params: { hash: string }): Promise<ApiKey | undefined> {
    const row = this.s.apiKeyByHash.get(params.hash) as ApiKeyRow | undefined;
    return row && toApiKey(row);
  }

  async apiKeyList(): Promise<ApiKey[]> {
    return (this.s.apiKeyList.all() as ApiKeyRow[]).map(toApiKey);
  }

  apiKeyRevoke(params: { id: string; now: number }): Promise<ApiKey | undefined> {
    return this.groupCommit.write(() => {
      const row = this.s.apiKeyRevoke.get(params) as ApiKeyRow | undefined;
      return row && toApiKey(row);
    });
  }

}
