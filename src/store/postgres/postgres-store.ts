import { randomUUID } from 'node:crypto';
import pg from 'pg';
import type { DependencyReporter } from '../../core/dependencies.js';
import { FleetError, notFound } from '../../core/errors.js';
import type { Agent, AgentCount, AgentStatus, ApiKey, Lock, Page, Task, TaskCount } from '../../core/types.js';
import { decodeCursor } from '../cursor.js';
import {
  requirementKey,
  type AgentCreateParams,
  type AgentHeartbeatResult,
  type AgentListParams,
  type AgentReleaseResult,
  type ApiKeyInsertParams,
  type LockAcquireParams,
  type LockAcquireResult,
  type LockListParams,
  type PoolStats,
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
import { PostgresConnection } from './connection.js';
import { migrations } from './migrations.js';
import { TickBatcher } from './tick-batcher.js';

export interface PostgresStoreOptions {
  /** postgres://user@host:port/database */
  url: string;
  /** Schema holding fleetd's tables; created if missing. Defaults to public. */
  schema?: string;
  /** Most connections in the pool. Defaults to 10. */
  poolSize?: number;
  /** How long a query waits for a free connection before failing with FLEETD_ERR_STORE_UNAVAILABLE (503), in ms. Defaults to 5000. */
  poolTimeoutMs?: number;
  /** Told when the pool and the LISTEN connection go down and come back (see connection.ts). */
  health?: { pool: DependencyReporter; listen: DependencyReporter };
}

interface AgentRow {
  seq: number;
  id: string;
  name: string;
  capabilities: string[];
  labels: string;
  max_concurrency: number;
  token_hash: string;
  status: AgentStatus;
  created_at: number;
  last_heartbeat_at: number;
}

const INT8_OID = 20;
/** Times and ids are BIGINT; as epoch milliseconds and row ids they stay far inside Number's exact range. */
const types = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === INT8_OID ? (value: string) => Number(value) : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
};

/** Errors worth running a transaction again for: deadlock, serialization failure. */
const RETRYABLE = new Set(['40P01', '40001']);
const UNIQUE_VIOLATION = '23505';

/** A named statement: each connection parses and plans it once, then only binds and executes it. */
export interface Prepared {
  name: string;
  text: string;
}

/**
 * The statements every task goes through, prepared once per connection. (A node that runs while
 * another migrates the schema under it would find these plans invalid; migrations are for restarts.)
 */
const prepared = (name: string, text: string): Prepared => ({ name: `fleetd_${name}`, text });

export type Query = <R extends pg.QueryResultRow>(text: string | Prepared, values?: unknown[]) => Promise<R[]>;

const toQueryConfig = (text: string | Prepared, values: unknown[]) => (typeof text === 'string' ? { text, values } : { ...text, values });

function toAgent(row: AgentRow): Agent {
  return {
    id: row.id,
    name: row.name,
    capabilities: row.capabilities,
    labels: JSON.parse(row.labels),
    maxConcurrency: row.max_concurrency,
    status: row.status,
    createdAt: row.created_at,
    lastHeartbeatAt: row.last_heartbeat_at,
  };
}

const byClaimOrder = (a: Task, b: Task) => b.priority - a.priority || a.id - b.id;

// The error a lease ended with when its holder let it lapse or went away; same shape as SQLite's.
const leaseError = (code: string, message: string) => JSON.stringify({ code, message });

/**
 * Sends a lease that ended without a result back to the queue, or to dead once its attempts are
 * spent; `$ids` are the tasks, `$now` the time, `$error` the JSON error.
 */
const RETURN_LEASES = `UPDATE tasks SET
    status = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'queued' END,
    run_at = CASE WHEN attempts >= max_attempts THEN run_at ELSE $2 END,
    completed_at = CASE WHEN attempts >= max_attempts THEN $2 ELSE completed_at END,
    error = $3, updated_at = $2, lease_expires_at = NULL
  WHERE id = ANY($1::bigint[]) AND status = 'leased' RETURNING *`;

const TASK_INSERT = prepared('task_insert', `INSERT INTO tasks (type, req_key, payload, priority, status, idempotency_key, request_hash,
    max_attempts, lease_ms, backoff_ms, run_at, created_at, updated_at)
  SELECT type, req_key, payload, priority, CASE WHEN run_at > $11 THEN 'scheduled' ELSE 'queued' END,
    idempotency_key, request_hash, max_attempts, lease_ms, backoff_ms, run_at, $11, $11
  FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::text[], $6::text[], $7::int[], $8::bigint[],
    $9::bigint[], $10::bigint[]) WITH ORDINALITY
    AS i(type, req_key, payload, priority, idempotency_key, request_hash, max_attempts, lease_ms, backoff_ms, run_at, ord)
  ORDER BY ord
  ON CONFLICT (idempotency_key) DO NOTHING
  RETURNING *`);

/**
 * The claim, in one statement: for each requirement set the agent can satisfy that has queued
 * tasks (from the counters, never a scan), the head of its index range, locked with SKIP LOCKED so
 * that concurrent claimers on any node take different tasks without waiting on each other; then
 * the best of those heads, as many as the agent has room for, leased. Unlike SQLite, PostgreSQL can
 * take the per-set heads in a LATERAL join and merge them in SQL.
 * $1 agent, $2 capabilities, $3 most wanted, $4 now, $5 the agent's maxConcurrency.
 */
export const TASK_CLAIM = prepared('task_claim', `WITH room AS (
    SELECT $5::int - count(*)::int AS free FROM tasks WHERE agent_id = $1 AND status = 'leased'
  ), keys AS (
    SELECT req_key FROM task_counts
    WHERE status = 'queued' AND string_to_array(req_key, E'\\n') <@ $2::text[]
    GROUP BY req_key HAVING sum(n) > 0
  ), picked AS (
    SELECT c.id FROM keys k CROSS JOIN LATERAL (
      SELECT id, priority FROM tasks WHERE status = 'queued' AND req_key = k.req_key
      ORDER BY priority DESC, id LIMIT (SELECT greatest(0, least($3::int, free)) FROM room) FOR UPDATE SKIP LOCKED
    ) c
    ORDER BY c.priority DESC, c.id LIMIT (SELECT greatest(0, least($3::int, free)) FROM room)
  ), leased AS (
    UPDATE tasks t SET status = 'leased', agent_id = $1, attempts = t.attempts + 1, claimed_at = $4, updated_at = $4,
      lease_expires_at = $4 + t.lease_ms
    -- ANY(ARRAY(...)) makes the planner look the few picked ids up by primary key; joined to the
    -- CTE instead, it may hash the whole table.
    WHERE t.id = ANY(ARRAY(SELECT id FROM picked))
    RETURNING t.*
  )
  SELECT (SELECT free FROM room) AS free, coalesce(json_agg(leased.*), '[]') AS tasks FROM leased`);

/** Completes the tasks of a batch still leased to their agents: $1 ids, $2 agents, $3 results (JSON), $4 times. */
const TASK_COMPLETE = prepared(
  'task_complete',
  `UPDATE tasks t SET status = 'completed', result = u.result, completed_at = u.now, updated_at = u.now, lease_expires_at = NULL
   FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[]) AS u(id, agent_id, result, now)
   WHERE t.id = u.id AND t.status = 'leased' AND t.agent_id = u.agent_id
   RETURNING t.*`,
);

/**
 * Locks the claiming agents' rows, in id order so that batches cannot deadlock, and records the
 * claim as their heartbeat: $1 agent ids, $2 now.
 */
const AGENT_CLAIM_LOCK = prepared(
  'agent_claim_lock',
  `WITH old AS (SELECT id, status FROM agents WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE)
   UPDATE agents a SET last_heartbeat_at = $2, status = 'online' FROM old WHERE a.id = old.id
   RETURNING a.*, old.status AS previous_status`,
);

const TASK_EXTEND = prepared(
  'task_extend',
  `UPDATE tasks SET lease_expires_at = $3 + coalesce($4::bigint, lease_ms), updated_at = $3
   WHERE id = $1 AND status = 'leased' AND agent_id = $2 RETURNING *`,
);

/**
 * The scale-out store: a bounded `pg` pool on PostgreSQL. Every write is one statement or one
 * short transaction; claims and maintenance take rows with FOR UPDATE SKIP LOCKED, so any number of
 * nodes can share the database. Wake-ups reach other nodes through LISTEN/NOTIFY, sent by triggers
 * at commit (see migrations.ts).
 */
export class PostgresStore implements Store {
  readonly driver = 'postgres';
  readonly supportsListen = true;
  readonly schema: string;
  /** Sent as application_name on every connection, so that this node recognises its own notifications. */
  readonly nodeId = `fleetd-${randomUUID()}`;
  private readonly connection: PostgresConnection;
  /**
   * Completions of one tick share one statement and one commit: one statement is atomic on its
   * own, so it runs without BEGIN and COMMIT, one round trip instead of three.
   */
  private readonly completions = new TickBatcher<{ id: number; agentId: string; result: string; now: number }, TaskRow | undefined>(
    async (batch) => {
      const rows = await this.query<TaskRow>(TASK_COMPLETE, [
        batch.map((c) => c.id),
        batch.map((c) => c.agentId),
        batch.map((c) => c.result),
        batch.map((c) => c.now),
      ]);
      const byId = new Map(rows.map((row) => [row.id, row]));
      return batch.map((c) => byId.get(c.id));
    },
    { unique: (c) => c.id },
  );
  /** Claims of one tick share one transaction and one commit (see taskClaim). */
  private readonly claims = new TickBatcher<TaskClaimParams, TaskClaimResult>((batch) => this.transaction((q) => this.claimBatch(q, batch)));

  constructor(options: PostgresStoreOptions) {
    this.schema = options.schema ?? 'public';
    if (!/^[a-z_][a-z0-9_]{0,62}$/.test(this.schema)) throw new Error(`invalid schema name ${this.schema}`);
    this.connection = new PostgresConnection({
      url: options.url,
      schema: this.schema,
      poolSize: options.poolSize ?? 10,
      poolTimeoutMs: options.poolTimeoutMs ?? 5_000,
      applicationName: this.nodeId,
      types,
      health: options.health,
    });
  }

  poolStats(): PoolStats {
    return this.connection.poolStats();
  }

  /** A connection from the pool, or a clear 503 when none frees up in time or the database is down. */
  private connect(): Promise<pg.PoolClient> {
    return this.connection.connect();
  }

  /** One statement on a pooled connection. Shared with the pipeline and case stores on this pool. */
  async query<R extends pg.QueryResultRow>(text: string | Prepared, values: unknown[] = []): Promise<R[]> {
    const client = await this.connect();
    try {
      return (await client.query<R>(toQueryConfig(text, values))).rows;
    } catch (err) {
      throw this.connection.translate(err);
    } finally {
      client.release();
    }
  }

  /**
   * Runs `work` in one transaction, again from the start on a deadlock or serialization failure.
   * Shared with the pipeline and case stores on this pool.
   */
  async transaction<T>(work: (q: Query) => Promise<T>, retryOn: string[] = []): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      const client = await this.connect();
      try {
        await client.query('BEGIN');
        const result = await work(async (text, values = []) => (await client.query(toQueryConfig(text, values))).rows);
        await client.query('COMMIT');
        return result;
      } catch (err) {
        await client.query('ROLLBACK').catch(() => {});
        const code = (err as { code?: string }).code ?? '';
        if (attempt < 5 && (RETRYABLE.has(code) || retryOn.includes(code))) continue;
        throw this.connection.translate(err);
      } finally {
        client.release();
      }
    }
  }

  /**
   * Runs `work` holding the session advisory lock `name` on a connection of its own (the work's
   * statements use other connections), so that it takes turns with every node sharing the database.
   */
  async withLock<T>(name: string, work: () => Promise<T>): Promise<T> {
    const client = await this.connect();
    try {
      await client.query('SELECT pg_advisory_lock(hashtext($1))', [name]);
      try {
        return await work();
      } finally {
        await client.query('SELECT pg_advisory_unlock(hashtext($1))', [name]);
      }
    } catch (err) {
      throw this.connection.translate(err);
    } finally {
      client.release();
    }
  }

  async migrate(): Promise<void> {
    await this.transaction(async (q) => {
      await q('SELECT pg_advisory_xact_lock(hashtext($1))', [`fleetd-migrate:${this.schema}`]);
      await q(`CREATE SCHEMA IF NOT EXISTS ${this.schema}`);
      await q('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)');
      const applied = new Set((await q<{ version: number }>('SELECT version FROM schema_migrations')).map((r) => r.version));
      for (const m of migrations) {
        if (applied.has(m.version)) continue;
        await q(m.sql);
        await q('INSERT INTO schema_migrations VALUES ($1, $2, $3)', [m.version, m.name, Date.now()]);
      }
    });
  }

  async ping(): Promise<void> {
    await this.query('SELECT 1');
  }

  /**
   * Calls `onAvailable` when another node (or this node's maintenance on another connection) makes
   * tasks claimable, with their counts by requirement key. Uses one dedicated connection outside
   * the pool, re-opened when it drops. Whenever connections work again after a failure,
   * notifications may have been lost meanwhile (and wake-ups spent on claims that failed): it
   * wakes for whatever is queued now.
   */
  async listen(onAvailable: (byRequirement: Record<string, number>) => void): Promise<() => Promise<void>> {
    const catchUp = async () => {
      const rows = await this.query<{ req_key: string; n: number }>(
        "SELECT req_key, sum(n)::bigint AS n FROM task_counts WHERE status = 'queued' GROUP BY req_key HAVING sum(n) > 0",
      );
      if (rows.length > 0) onAvailable(Object.fromEntries(rows.map((r) => [r.req_key, r.n])));
    };
    // A catch-up that fails starts another probe, whose success catches up again.
    const stopCatchingUp = this.connection.onRecovered(() => void catchUp().catch(() => {}));
    const stopListening = await this.connection.listen('fleetd_tasks_available', (payload) => {
      const { schema, node, byRequirement } = JSON.parse(payload) as { schema: string; node: string; byRequirement: Record<string, number> };
      if (schema === this.schema && node !== this.nodeId) onAvailable(byRequirement);
    });
    return async () => {
      stopCatchingUp();
      await stopListening();
    };
  }

  async close(): Promise<void> {
    await this.connection.close();
  }

  /** Drops the schema and everything in it. For tests that each use a schema of their own. */
  async dropSchema(): Promise<void> {
    await this.query(`DROP SCHEMA IF EXISTS ${this.schema} CASCADE`);
  }

  // ---- agents ----

  async agentCreateMany(params: AgentCreateParams[]): Promise<Agent[]> {
    const rows = await this.query<AgentRow>(
      `INSERT INTO agents (id, name, capabilities, labels, max_concurrency, token_hash, status, created_at, last_heartbeat_at)
       SELECT id, name, ARRAY(SELECT jsonb_array_elements_text(caps::jsonb)), labels, max_concurrency, token_hash, 'online', now, now
       FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::text[], $7::bigint[]) WITH ORDINALITY
         AS i(id, name, caps, labels, max_concurrency, token_hash, now, ord)
       ORDER BY ord RETURNING *`,
      [
        params.map((p) => p.id),
        params.map((p) => p.name),
        params.map((p) => JSON.stringify(p.capabilities)),
        params.map((p) => JSON.stringify(p.labels)),
        params.map((p) => p.maxConcurrency),
        params.map((p) => p.tokenHash),
        params.map((p) => p.now),
      ],
    );
    return rows.sort((a, b) => a.seq - b.seq).map(toAgent);
  }

  async agentGet(params: { id: string }): Promise<Agent | undefined> {
    const [row] = await this.query<AgentRow>('SELECT * FROM agents WHERE id = $1', [params.id]);
    return row && toAgent(row);
  }

  async agentIdByTokenHash(params: { hash: string }): Promise<string | undefined> {
    const [row] = await this.query<{ id: string }>('SELECT id FROM agents WHERE token_hash = $1', [params.hash]);
    return row?.id;
  }

  async agentList(params: AgentListParams): Promise<Page<Agent>> {
    const after = decodeCursor(params.cursor);
    const where: string[] = [];
    const args: unknown[] = [];
    if (params.capability !== undefined) {
      args.push([params.capability]);
      where.push(`capabilities @> $${args.length}::text[]`);
    }
    if (params.status !== undefined) {
      args.push(params.status);
      where.push(`status = $${args.length}`);
    }
    if (after !== undefined) {
      args.push(after);
      where.push(`seq > $${args.length}`);
    }
    args.push(params.limit + 1);
    const sql = `SELECT * FROM agents${where.length ? ' WHERE ' + where.join(' AND ') : ''} ORDER BY seq LIMIT $${args.length}`;
    return page(await this.query<AgentRow>(sql, args), params.limit, toAgent, (r) => r.seq);
  }

  async agentHeartbeat(params: { id: string; now: number }): Promise<AgentHeartbeatResult | undefined> {
    const [row] = await this.query<AgentRow & { previous_status: AgentStatus }>(
      `WITH old AS (SELECT id, status FROM agents WHERE id = $1 FOR UPDATE)
       UPDATE agents a SET last_heartbeat_at = $2, status = 'online' FROM old WHERE a.id = old.id
       RETURNING a.*, old.status AS previous_status`,
      [params.id, params.now],
    );
    return row && { agent: toAgent(row), previousStatus: row.previous_status };
  }

  async agentMarkStale(params: { staleBefore: number; now: number; limit: number }): Promise<string[]> {
    const rows = await this.query<{ id: string }>(
      `UPDATE agents SET status = 'stale' WHERE seq IN (SELECT seq FROM agents
         WHERE status = 'online' AND last_heartbeat_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING id`,
      [params.staleBefore, params.limit],
    );
    return rows.map((r) => r.id);
  }

  async agentReapOffline(params: { offlineBefore: number; now: number; limit: number }): Promise<AgentReleaseResult[]> {
    return this.transaction(async (q) => {
      const agents = await q<AgentRow>(
        `UPDATE agents SET status = 'offline' WHERE seq IN (SELECT seq FROM agents
           WHERE status IN ('online', 'stale') AND last_heartbeat_at < $1
           ORDER BY last_heartbeat_at LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING *`,
        [params.offlineBefore, params.limit],
      );
      if (agents.length === 0) return [];
      const released = await this.releaseAgents(q, agents.map((a) => a.id), params.now);
      return agents.sort((a, b) => a.last_heartbeat_at - b.last_heartbeat_at).map((row) => ({ agent: toAgent(row), ...released(row.id) }));
    });
  }

  async agentDelete(params: { id: string; now: number }): Promise<AgentReleaseResult | undefined> {
    return this.transaction(async (q) => {
      const [row] = await q<AgentRow>('DELETE FROM agents WHERE id = $1 RETURNING *', [params.id]);
      if (!row) return undefined;
      const released = await this.releaseAgents(q, [row.id], params.now);
      return { agent: toAgent(row), ...released(row.id) };
    });
  }

  async agentRelease(params: { id: string; now: number }): Promise<AgentReleaseResult | undefined> {
    return this.transaction(async (q) => {
      const [row] = await q<AgentRow>("UPDATE agents SET status = 'offline' WHERE id = $1 RETURNING *", [params.id]);
      if (!row) return undefined;
      const released = await this.releaseAgents(q, [row.id], params.now);
      return { agent: toAgent(row), ...released(row.id) };
    });
  }

  /** Inside a transaction: every task leased to the agents goes back (or dies), every lock they hold goes. */
  private async releaseAgents(
    q: Query,
    agentIds: string[],
    now: number,
  ): Promise<(agentId: string) => { tasks: TaskTransition[]; locks: Lock[] }> {
    const leased = await q<{ id: number; agent_id: string }>(
      "SELECT id, agent_id FROM tasks WHERE agent_id = ANY($1::text[]) AND status = 'leased' ORDER BY id FOR UPDATE",
      [agentIds],
    );
    const tasks: TaskRow[] = [];
    // One statement per agent, because the error names the agent that went away.
    for (const agentId of agentIds) {
      const ids = leased.filter((r) => r.agent_id === agentId).map((r) => r.id);
      if (ids.length === 0) continue;
      tasks.push(...(await q<TaskRow>(RETURN_LEASES, [ids, now, leaseError('AGENT_OFFLINE', `agent ${agentId} went offline`)])));
    }
    const locks = await q<LockRow>('DELETE FROM locks WHERE agent_id = ANY($1::text[]) RETURNING *', [agentIds]);
    return (agentId) => ({
      tasks: tasks
        .filter((t) => t.agent_id === agentId)
        .sort((a, b) => a.id - b.id)
        .map((t) => ({ task: toTask(t), from: 'leased' as const })),
      locks: locks.filter((l) => l.agent_id === agentId).sort((a, b) => a.seq - b.seq).map(toLock),
    });
  }

  async agentOldestHeartbeat(params: { status: AgentStatus }): Promise<number | null> {
    const [row] = await this.query<{ t: number | null }>('SELECT min(last_heartbeat_at) AS t FROM agents WHERE status = $1', [params.status]);
    return row.t;
  }

  async agentCounts(): Promise<AgentCount[]> {
    return this.query<AgentCount>('SELECT status, n AS count FROM agent_counts');
  }

  // ---- tasks ----

  async taskInsertMany(params: { tasks: TaskInsertParams[]; now: number }): Promise<TaskInsertResult[]> {
    const { tasks, now } = params;
    const hashes = tasks.map((t) => (t.idempotencyKey === null ? null : requestHash(t)));
    // One statement for the whole batch, inserted in order, so ids follow the batch's order.
    const insert = (q: Query) =>
      q<TaskRow>(TASK_INSERT, [
        tasks.map((t) => t.type),
        tasks.map((t) => requirementKey(t.requires)),
        tasks.map((t) => JSON.stringify(t.payload)),
        tasks.map((t) => t.priority),
        tasks.map((t) => t.idempotencyKey),
        hashes,
        tasks.map((t) => t.maxAttempts),
        tasks.map((t) => t.leaseMs),
        tasks.map((t) => t.backoffMs),
        tasks.map((t) => t.runAt),
        now,
      ]).then((rows) => rows.sort((a, b) => a.id - b.id));
    if (hashes.every((h) => h === null)) {
      // Without idempotency keys nothing can conflict: the one statement is the whole transaction.
      return (await insert((text, values) => this.query(text, values))).map((row) => ({ task: toTask(row), created: true }));
    }
    return this.transaction(async (q) => {
      const inserted = await insert(q);
      const insertedKeys = new Set(inserted.map((r) => r.idempotency_key).filter((k) => k !== null));
      const repeatedKeys = tasks
        .map((t) => t.idempotencyKey)
        .filter((k): k is string => k !== null && !insertedKeys.has(k));
      const existing = new Map<string, TaskRow>();
      if (repeatedKeys.length > 0) {
        for (const row of await q<TaskRow>('SELECT * FROM tasks WHERE idempotency_key = ANY($1::text[])', [repeatedKeys])) {
          existing.set(row.idempotency_key!, row);
        }
      }
      const results: TaskInsertResult[] = [];
      let next = 0;
      tasks.forEach((t, i) => {
        const key = t.idempotencyKey;
        if (key !== null && (existing.has(key) || !insertedKeys.has(key))) {
          const row = existing.get(key)!;
          if (row.request_hash !== hashes[i]) {
            throw new FleetError('FLEETD_ERR_IDEMPOTENCY_CONFLICT', `idempotency key ${key} was already used for a different task`, {
              idempotencyKey: key,
              taskId: row.id,
            });
          }
          results.push({ task: toTask(row), created: false });
          return;
        }
        const row = inserted[next++];
        // A key repeated later in the same batch refers to this row.
        if (key !== null) existing.set(key, row);
        results.push({ task: toTask(row), created: true });
      });
      return results;
    });
  }

  async taskGet(params: { id: number }): Promise<Task | undefined> {
    const [row] = await this.query<TaskRow>('SELECT * FROM tasks WHERE id = $1', [params.id]);
    return row && toTask(row);
  }

  async taskList(params: TaskListParams): Promise<Page<Task>> {
    const cursor = decodeCursor(params.cursor);
    const asc = params.order === 'asc';
    const where: string[] = [];
    const args: unknown[] = [];
    for (const [column, value] of [
      ['status', params.status],
      ['type', params.type],
      ['agent_id', params.agentId],
    ] as const) {
      if (value !== undefined) {
        args.push(value);
        where.push(`${column} = $${args.length}`);
      }
    }
    if (cursor !== undefined) {
      args.push(cursor);
      where.push(asc ? `id > $${args.length}` : `id < $${args.length}`);
    }
    args.push(params.limit + 1);
    const sql = `SELECT * FROM tasks${where.length ? ' WHERE ' + where.join(' AND ') : ''} ORDER BY id ${asc ? 'ASC' : 'DESC'} LIMIT $${args.length}`;
    return page(await this.query<TaskRow>(sql, args), params.limit, toTask, (r) => r.id);
  }

  /**
   * The agent's row is locked first (its heartbeat), so that two claims by one agent on two nodes
   * take turns and cannot together exceed its maxConcurrency; the claim statement that follows
   * starts after the lock, so it counts the other claim's leases.
   */
  taskClaim(params: TaskClaimParams): Promise<TaskClaimResult> {
    return this.claims.run(params);
  }

  /**
   * Inside one transaction, the claims of a tick. The agents' rows are locked first (their
   * heartbeats, in id order so that batches cannot deadlock), so that two claims by one agent on
   * two nodes take turns and cannot together exceed its maxConcurrency; each claim statement then
   * runs after the locks, so it counts the other claims' leases, including earlier ones in this
   * batch.
   */
  private async claimBatch(q: Query, batch: TaskClaimParams[]): Promise<(TaskClaimResult | Error)[]> {
    const ids = [...new Set(batch.map((p) => p.agentId))].sort();
    const rows = await q<AgentRow & { previous_status: AgentStatus }>(AGENT_CLAIM_LOCK, [ids, Math.max(...batch.map((p) => p.now))]);
    const agents = new Map(rows.map((row) => [row.id, { agent: toAgent(row), previousStatus: row.previous_status }]));
    const results: (TaskClaimResult | Error)[] = [];
    for (const params of batch) {
      const found = agents.get(params.agentId);
      if (!found) {
        results.push(notFound('agent', params.agentId));
        continue;
      }
      const { agent, previousStatus } = found;
      // One row whatever was claimed: the leased tasks as JSON, and the agent's room before the claim.
      const [claimed] = await q<{ free: number; tasks: TaskRow[] }>(TASK_CLAIM, [
        params.agentId,
        agent.capabilities,
        params.max,
        params.now,
        agent.maxConcurrency,
      ]);
      const tasks = claimed.tasks.map(toTask).sort(byClaimOrder);
      results.push({ agent, previousStatus, tasks, room: Math.max(0, claimed.free - tasks.length) });
      // A second claim by the same agent in this batch finds it online already.
      found.previousStatus = 'online';
    }
    return results;
  }


  /** Why a task update that required the agent's lease matched nothing. */
  private async leaseLost(id: number, agentId: string): Promise<FleetError> {
    const [row] = await this.query<TaskRow>('SELECT status, agent_id FROM tasks WHERE id = $1', [id]);
    if (!row) return notFound('task', id);
    return new FleetError('FLEETD_ERR_LEASE_LOST', `agent ${agentId} does not hold the lease on task ${id}`, {
      taskId: id,
      status: row.status,
      holder: row.status === 'leased' ? row.agent_id : null,
    });
  }

  async taskComplete(params: { id: number; agentId: string; result: unknown; now: number }): Promise<Task> {
    const row = await this.completions.run({
      id: params.id,
      agentId: params.agentId,
      result: JSON.stringify(params.result ?? null),
      now: params.now,
    });
    if (!row) throw await this.leaseLost(params.id, params.agentId);
    return toTask(row);
  }

  async taskFail(params: TaskFailParams): Promise<Task> {
    const error = JSON.stringify(params.error ?? null);
    const result = await this.transaction(async (q) => {
      const [row] = await q<TaskRow>(
        "SELECT * FROM tasks WHERE id = $1 AND status = 'leased' AND agent_id = $2 FOR UPDATE",
        [params.id, params.agentId],
      );
      if (!row) return undefined;
      if (!params.retryable || row.attempts >= row.max_attempts) {
        const [dead] = await q<TaskRow>(
          `UPDATE tasks SET status = 'dead', error = $2, completed_at = $3, updated_at = $3, lease_expires_at = NULL
           WHERE id = $1 RETURNING *`,
          [row.id, error, params.now],
        );
        return dead;
      }
      const runAt = params.retryDelay(row.attempts, row.backoff_ms) + params.now;
      const [next] = await q<TaskRow>(
        'UPDATE tasks SET status = $2, run_at = $3, error = $4, updated_at = $5, lease_expires_at = NULL WHERE id = $1 RETURNING *',
        [row.id, runAt > params.now ? 'scheduled' : 'queued', runAt, error, params.now],
      );
      return next;
    });
    if (!result) throw await this.leaseLost(params.id, params.agentId);
    return toTask(result);
  }

  async taskExtendLease(params: { id: number; agentId: string; leaseMs?: number; now: number }): Promise<Task> {
    const [row] = await this.query<TaskRow>(TASK_EXTEND, [params.id, params.agentId, params.now, params.leaseMs ?? null]);
    if (!row) throw await this.leaseLost(params.id, params.agentId);
    return toTask(row);
  }

  async taskCancel(params: { id: number; now: number }): Promise<Task> {
    const [row] = await this.query<TaskRow>(
      `UPDATE tasks SET status = 'cancelled', completed_at = $2, updated_at = $2, lease_expires_at = NULL
       WHERE id = $1 AND status NOT IN ('completed', 'dead', 'cancelled') RETURNING *`,
      [params.id, params.now],
    );
    if (row) return toTask(row);
    const current = await this.taskGet({ id: params.id });
    if (!current) throw notFound('task', params.id);
    throw new FleetError('FLEETD_ERR_TASK_STATE', `task ${params.id} is ${current.status} and cannot be cancelled`, {
      taskId: params.id,
      status: current.status,
    });
  }

  async taskRetry(params: { id: number; now: number }): Promise<Task> {
    const [row] = await this.query<TaskRow>(
      `UPDATE tasks SET status = 'queued', attempts = 0, run_at = $2, updated_at = $2, completed_at = NULL, result = NULL,
         error = NULL, lease_expires_at = NULL
       WHERE id = $1 AND status IN ('dead', 'cancelled') RETURNING *`,
      [params.id, params.now],
    );
    if (row) return toTask(row);
    const current = await this.taskGet({ id: params.id });
    if (!current) throw notFound('task', params.id);
    throw new FleetError('FLEETD_ERR_TASK_STATE', `task ${params.id} is ${current.status}; only dead or cancelled tasks can be retried`, {
      taskId: params.id,
      status: current.status,
    });
  }

  async taskRescueExpiredLeases(params: { now: number; limit: number }): Promise<TaskTransition[]> {
    const rows = await this.query<TaskRow>(
      `WITH expired AS (
         SELECT id FROM tasks WHERE status = 'leased' AND lease_expires_at <= $1
         ORDER BY lease_expires_at LIMIT $2 FOR UPDATE SKIP LOCKED
       )
       UPDATE tasks t SET
         status = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'queued' END,
         run_at = CASE WHEN attempts >= max_attempts THEN run_at ELSE $1 END,
         completed_at = CASE WHEN attempts >= max_attempts THEN $1 ELSE completed_at END,
         error = jsonb_build_object('code', 'LEASE_EXPIRED', 'message', 'lease held by ' || agent_id || ' expired')::text,
         updated_at = $1, lease_expires_at = NULL
       FROM expired WHERE t.id = expired.id RETURNING t.*`,
      [params.now, params.limit],
    );
    return rows.sort((a, b) => a.id - b.id).map((row) => ({ task: toTask(row), from: 'leased' as const }));
  }

  async taskPromoteScheduled(params: { now: number; limit: number }): Promise<TaskTransition[]> {
    const rows = await this.query<TaskRow>(
      `UPDATE tasks SET status = 'queued', updated_at = $1 WHERE id IN (
         SELECT id FROM tasks WHERE status = 'scheduled' AND run_at <= $1 ORDER BY run_at LIMIT $2 FOR UPDATE SKIP LOCKED
       ) RETURNING *`,
      [params.now, params.limit],
    );
    return rows.sort((a, b) => a.run_at - b.run_at || a.id - b.id).map((row) => ({ task: toTask(row), from: 'scheduled' as const }));
  }

  async taskDeleteFinished(params: { before: number; limit: number }): Promise<number> {
    const rows = await this.query<{ id: number }>(
      `DELETE FROM tasks WHERE id IN (
         SELECT id FROM tasks WHERE completed_at IS NOT NULL AND completed_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED
       ) RETURNING id`,
      [params.before, params.limit],
    );
    return rows.length;
  }

  async taskNextDeadlines(): Promise<{ leaseExpiresAt: number | null; runAt: number | null }> {
    const [row] = await this.query<{ lease: number | null; run: number | null }>(
      `SELECT (SELECT min(lease_expires_at) FROM tasks WHERE status = 'leased') AS lease,
              (SELECT min(run_at) FROM tasks WHERE status = 'scheduled') AS run`,
    );
    return { leaseExpiresAt: row.lease, runAt: row.run };
  }

  async taskCounts(): Promise<TaskCount[]> {
    return this.query<TaskCount>(
      'SELECT type, priority, status, sum(n)::bigint AS count FROM task_counts GROUP BY type, priority, status HAVING sum(n) > 0',
    );
  }

  // ---- locks ----

  /**
   * Two nodes racing for the same free resource both find no holder; the second then fails on the
   * resource's primary key, and running it again finds the first as the holder: a conflict.
   */
  async lockAcquire(params: LockAcquireParams): Promise<LockAcquireResult> {
    return this.transaction(async (q): Promise<LockAcquireResult> => {
      const holders = await q<{ resource: string; lock_id: string; agent_id: string; expires_at: number; seq: number }>(
        `SELECT lr.resource, l.id AS lock_id, l.agent_id, l.expires_at, l.seq FROM lock_resources lr
         JOIN locks l ON l.seq = lr.lock_seq WHERE lr.resource = ANY($1::text[]) FOR UPDATE OF l`,
        [params.resources],
      );
      const byResource = new Map(holders.map((h) => [h.resource, h]));
      const conflicts: { resource: string; lockId: string; agentId: string; expiresAt: number }[] = [];
      const expired = new Set<number>();
      for (const resource of params.resources) {
        const holder = byResource.get(resource);
        if (!holder) continue;
        if (holder.expires_at <= params.now) expired.add(holder.seq);
        else conflicts.push({ resource, lockId: holder.lock_id, agentId: holder.agent_id, expiresAt: holder.expires_at });
      }
      if (conflicts.length > 0) return { acquired: false, conflicts };
      // A lock past its TTL that the expirer has not reached yet no longer holds anything.
      if (expired.size > 0) await q('DELETE FROM locks WHERE seq = ANY($1::bigint[])', [[...expired]]);
      const [row] = await q<LockRow>(
        `INSERT INTO locks (id, agent_id, resources, description, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING *`,
        [params.id, params.agentId, JSON.stringify(params.resources), params.description, params.now, params.now + params.ttlMs],
      );
      await q('INSERT INTO lock_resources (resource, lock_seq) SELECT unnest($1::text[]), $2', [params.resources, row.seq]);
      return { acquired: true, lock: toLock(row) };
    }, [UNIQUE_VIOLATION]);
  }

  async lockRelease(params: { id: string; agentId?: string }): Promise<Lock | undefined> {
    const [row] = await this.query<LockRow>(
      'DELETE FROM locks WHERE id = $1 AND ($2::text IS NULL OR agent_id = $2) RETURNING *',
      [params.id, params.agentId ?? null],
    );
    if (row) return toLock(row);
    if (params.agentId !== undefined && (await this.lockGet({ id: params.id }))) {
      throw new FleetError('FLEETD_ERR_FORBIDDEN', `lock ${params.id} is held by another agent`, { lockId: params.id });
    }
    return undefined;
  }

  async lockGet(params: { id: string }): Promise<Lock | undefined> {
    const [row] = await this.query<LockRow>('SELECT * FROM locks WHERE id = $1', [params.id]);
    return row && toLock(row);
  }

  async lockList(params: LockListParams): Promise<Page<Lock>> {
    const after = decodeCursor(params.cursor);
    const where: string[] = [];
    const args: unknown[] = [];
    if (params.agentId !== undefined) {
      args.push(params.agentId);
      where.push(`agent_id = $${args.length}`);
    }
    if (after !== undefined) {
      args.push(after);
      where.push(`seq > $${args.length}`);
    }
    args.push(params.limit + 1);
    const sql = `SELECT * FROM locks${where.length ? ' WHERE ' + where.join(' AND ') : ''} ORDER BY seq LIMIT $${args.length}`;
    return page(await this.query<LockRow>(sql, args), params.limit, toLock, (r) => r.seq);
  }

  async lockExpire(params: { now: number; limit: number }): Promise<Lock[]> {
    const rows = await this.query<LockRow>(
      `DELETE FROM locks WHERE seq IN (
         SELECT seq FROM locks WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED
       ) RETURNING *`,
      [params.now, params.limit],
    );
    return rows.sort((a, b) => a.expires_at - b.expires_at || a.seq - b.seq).map(toLock);
  }

  async lockNextExpiry(): Promise<number | null> {
    const [row] = await this.query<{ t: number | null }>('SELECT min(expires_at) AS t FROM locks');
    return row.t;
  }

  // ---- API keys ----

  async apiKeyInsert(params: ApiKeyInsertParams): Promise<ApiKey | undefined> {
    const rows = await this.transaction(async (q) => {
      // Nodes starting together on an empty database must not each create a first admin key.
      if (params.onlyIfNone) await q('SELECT pg_advisory_xact_lock(hashtext($1))', [`fleetd-first-key:${this.schema}`]);
      return q(
        `INSERT INTO api_keys (id, name, scope, hash, created_at) SELECT $1, $2, $3, $4, $5
         WHERE NOT $6 OR NOT EXISTS (SELECT 1 FROM api_keys) RETURNING *`,
        [params.id, params.name, params.scope, params.hash, params.now, params.onlyIfNone === true],
      );
    });
    return rows[0] && toApiKey(rows[0] as ApiKeyRow);
  }

  async apiKeyByHash(params: { hash: string }): Promise<ApiKey | undefined> {
    const [row] = await this.query<ApiKeyRow>('SELECT * FROM api_keys WHERE hash = $1 AND revoked_at IS NULL', [params.hash]);
    return row && toApiKey(row);
  }

  async apiKeyList(): Promise<ApiKey[]> {
    return (await this.query<ApiKeyRow>('SELECT * FROM api_keys ORDER BY created_at, id')).map(toApiKey);
  }

  async apiKeyRevoke(params: { id: string; now: number }): Promise<ApiKey | undefined> {
    const [row] = await this.query<ApiKeyRow>(
      'UPDATE api_keys SET revoked_at = coalesce(revoked_at, $2) WHERE id = $1 RETURNING *',
      [params.id, params.now],
    );
    return row && toApiKey(row);
  }
}
