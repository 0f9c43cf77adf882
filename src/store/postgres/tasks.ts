import { notFound } from '../../domain/errors.js';
import type { QueuedGroup } from '../../domain/type-policies.js';
import { requirementKey } from '../../domain/requirements.js';
import type { Agent, AgentStatus, Task, TaskCount } from '../../domain/types.js';
import { mapPage } from '../keyset.js';
import * as lists from '../lists.js';
import { endingLease, leaseEndColumns, toAgent, toTask, type AgentRow, type TaskRow } from '../rows.js';
import {
  TASK_LOCK_TTL_MS,
  taskLockId,
  type EndLease,
  type LockAcquireParams,
  type LockAcquireResult,
  type TaskClaimParams,
  type TaskClaimResult,
  type TaskInsertResult,
  type TaskStore,
  type TaskTransition,
  type TaskWrite,
} from '../store.js';
import { prepared, type PostgresDatabase, type Query } from './database.js';
import { TickBatcher } from './tick-batcher.js';
import type { PostgresAdmission } from './types.js';

const byClaimOrder = (a: Task, b: Task) => b.priority - a.priority || a.id - b.id;

/** Inserts a batch in one statement, in order, so that ids follow the batch's order. */
const TASK_INSERT = prepared('task_insert', `INSERT INTO tasks (type, req_key, payload, priority, status, idempotency_key, request_hash,
    max_attempts, lease_ms, backoff_ms, run_at, created_at, updated_at, concurrency_key, locks)
  SELECT type, req_key, payload, priority, status, idempotency_key, request_hash, max_attempts, lease_ms, backoff_ms, run_at, $12, $12,
    concurrency_key, locks
  FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::text[], $6::text[], $7::text[], $8::int[], $9::bigint[],
    $10::bigint[], $11::bigint[], $13::text[], $14::text[]) WITH ORDINALITY
    AS i(type, req_key, payload, priority, status, idempotency_key, request_hash, max_attempts, lease_ms, backoff_ms, run_at,
      concurrency_key, locks, ord)
  ORDER BY ord
  ON CONFLICT (idempotency_key) DO NOTHING
  RETURNING *`);

/**
 * Ends leases as core decided, in one statement whatever their number: $1 ids, $2 statuses,
 * $3 run_at (NULL keeps the row's), $4 completed_at, $5 errors (JSON), $6 now. A lease that ended
 * meanwhile (completed, cancelled) is left alone.
 */
const END_LEASES = prepared('end_leases', `UPDATE tasks t SET status = u.status, run_at = coalesce(u.run_at, t.run_at),
    completed_at = u.completed_at, error = u.error, updated_at = $6, lease_expires_at = NULL
  FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::text[]) AS u(id, status, run_at, completed_at, error)
  WHERE t.id = u.id AND t.status = 'leased' RETURNING t.*`);

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

/** The tasks area of the PostgreSQL driver, and the lease ending that agents' release shares. */
export function postgresTasks(
  db: PostgresDatabase,
  admission: PostgresAdmission,
  acquireLock: (q: Query, params: LockAcquireParams) => Promise<LockAcquireResult>,
): {
  store: TaskStore;
  endLeases: (q: Query, rows: TaskRow[], now: number, endLease: EndLease) => Promise<TaskTransition[]>;
} {
  const query: Query = (text, values) => db.query(text, values);

  /**
   * Completions of one tick share one statement and one commit: one statement is atomic on its
   * own, so it runs without BEGIN and COMMIT, one round trip instead of three.
   */
  const completions = new TickBatcher<{ id: number; agentId: string; result: string; now: number }, TaskRow | undefined>(
    async (batch) => {
      const rows = await query<TaskRow>(TASK_COMPLETE, [
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

  /**
   * Claims of one tick share one transaction and one commit. The agent's row is locked first (its
   * heartbeat), so that two claims by one agent on two nodes take turns and cannot together exceed
   * its maxConcurrency; the claim statement that follows starts after the lock, so it counts the
   * other claim's leases.
   */
  const claims = new TickBatcher<TaskClaimParams, TaskClaimResult>((batch) => db.transaction((q) => claimBatch(q, batch)));

  /**
   * Inside one transaction, the claims of a tick. The agents' rows are locked first (their
   * heartbeats, in id order so that batches cannot deadlock), so that two claims by one agent on
   * two nodes take turns and cannot together exceed its maxConcurrency; each claim statement then
   * runs after the locks, so it counts the other claims' leases, including earlier ones in this
   * batch.
   */
  async function claimBatch(q: Query, batch: TaskClaimParams[]): Promise<(TaskClaimResult | Error)[]> {
    const ids = [...new Set(batch.map((p) => p.agentId))].sort();
    const rows = await q<AgentRow & { previous_status: AgentStatus }>(AGENT_CLAIM_LOCK, [ids, Math.max(...batch.map((p) => p.now))]);
    const agents = new Map(rows.map((row) => [row.id, { agent: toAgent(row), previousStatus: row.previous_status }]));
    const planned = batch.some((p) => p.plan) && !(await admission.plain(q));
    if (planned) await admission.lock(q);
    const results: (TaskClaimResult | Error)[] = [];
    for (const params of batch) {
      const found = agents.get(params.agentId);
      if (!found) {
        results.push(notFound('agent', params.agentId));
        continue;
      }
      const { agent, previousStatus } = found;
      if (planned && params.plan) {
        results.push({ agent, previousStatus, ...(await plannedClaim(q, params, agent)) });
        found.previousStatus = 'online';
        continue;
      }
      // One row whatever was claimed: the leased tasks as JSON, and the agent's room before the claim.
      const [claimed] = await q<{ free: number; tasks: TaskRow[] }>(TASK_CLAIM, [
        params.agentId,
        agent.capabilities,
        params.max,
        params.now,
        agent.maxConcurrency,
      ]);
      const tasks = claimed.tasks.map(toTask).sort(byClaimOrder);
      results.push({ agent, previousStatus, tasks, room: Math.max(0, claimed.free - tasks.length), heldBack: {}, retryAt: null });
      // A second claim by the same agent in this batch finds it online already.
      found.previousStatus = 'online';
    }
    return results;
  }

  /**
   * A claim under policies, pauses or concurrency keys: core's plan says which group goes next, and
   * each task goes by one statement (the oldest head among the groups, leased).
   */
  async function plannedClaim(q: Query, params: TaskClaimParams, agent: Agent): Promise<Omit<TaskClaimResult, 'agent' | 'previousStatus'>> {
    const [{ n: inFlight }] = await q<{ n: number }>("SELECT count(*)::int AS n FROM tasks WHERE agent_id = $1 AND status = 'leased'", [agent.id]);
    const free = agent.maxConcurrency - inFlight;
    const room = Math.min(params.max, free);
    if (room <= 0) return { tasks: [], room: 0, heldBack: {}, retryAt: null };
    const groups = await admission.groups(q, agent.capabilities);
    const plan = params.plan!(await admission.state(q, params.now, groups), groups, params.now);
    const tasks: Task[] = [];
    // Only while some queued task locks resources: its lease is undone if its locks are held.
    const locking = await admission.locking(q);
    // Tasks whose locks are held are passed over, each group's next task considered instead.
    const passed = new Map<QueuedGroup, number>();
    for (let next = plan.next(); next !== undefined && tasks.length < room; next = plan.next()) {
      if (locking) await q('SAVEPOINT fleetd_head');
      const row = await admission.leaseHead(q, next, agent.id, params.now, passed);
      const group = row && next.find((g) => g.reqKey === row.req_key && g.type === row.type && g.priority === row.priority && g.key === row.concurrency_key);
      if (row && group && row.locks !== '[]') {
        const resources = JSON.parse(row.locks) as string[];
        const taken = await acquireLock(q, {
          id: taskLockId(row.id),
          agentId: agent.id,
          resources,
          ttlMs: TASK_LOCK_TTL_MS,
          description: `task ${row.id}`,
          now: params.now,
          decide: plan.locks.decide,
          probes: plan.locks.probes(resources),
        });
        if (!taken.acquired) {
          await q('ROLLBACK TO SAVEPOINT fleetd_head');
          passed.set(group, row.id);
          plan.lockedOut(group);
          continue;
        }
      }
      if (locking) await q('RELEASE SAVEPOINT fleetd_head');
      if (row) tasks.push(toTask(row));
      if (group) plan.took(group);
      else plan.exhausted(next);
    }
    await admission.record(q, plan, params.now);
    return { tasks, room: free - tasks.length, heldBack: plan.heldBack(), retryAt: plan.retryAt() };
  }

  /**
   * Inside a transaction, with the rows locked: ends their leases as core's rule decides, in one
   * statement. The rule runs here, between the read and the write, because it needs the attempts
   * the locked rows hold.
   */
  async function endLeases(q: Query, rows: TaskRow[], now: number, endLease: EndLease): Promise<TaskTransition[]> {
    if (rows.length === 0) return [];
    const ends = rows.map((row) => leaseEndColumns(endLease(endingLease(row)), now));
    const ended = await q<TaskRow>(END_LEASES, [
      rows.map((r) => r.id),
      ends.map((e) => e.status),
      ends.map((e) => e.run_at),
      ends.map((e) => e.completed_at),
      ends.map((e) => e.error),
      now,
    ]);
    return ended.sort((a, b) => a.id - b.id).map((row) => ({ task: toTask(row), from: 'leased' as const }));
  }

  /** The result of a conditional write, or the row as it is now. */
  async function written(row: TaskRow | undefined, id: number): Promise<TaskWrite> {
    if (row) return { task: toTask(row) };
    const [current] = await query<TaskRow>('SELECT * FROM tasks WHERE id = $1', [id]);
    return { task: undefined, current: current && toTask(current) };
  }

  const store: TaskStore = {
    async taskInsertMany(params) {
      const { tasks, now } = params;
      const insert = (q: Query) =>
        q<TaskRow>(TASK_INSERT, [
          tasks.map((t) => t.type),
          tasks.map((t) => requirementKey(t.requires)),
          tasks.map((t) => JSON.stringify(t.payload)),
          tasks.map((t) => t.priority),
          tasks.map((t) => t.status),
          tasks.map((t) => t.idempotencyKey),
          tasks.map((t) => t.requestHash),
          tasks.map((t) => t.maxAttempts),
          tasks.map((t) => t.leaseMs),
          tasks.map((t) => t.backoffMs),
          tasks.map((t) => t.runAt),
          now,
          tasks.map((t) => t.concurrencyKey ?? ''),
          tasks.map((t) => JSON.stringify(t.locks ?? [])),
        ]).then((rows) => rows.sort((a, b) => a.id - b.id));
      if (tasks.every((t) => t.idempotencyKey === null)) {
        // Without idempotency keys nothing can repeat: the one statement is the whole transaction.
        return (await insert(query)).map((row) => ({ task: toTask(row), created: true }));
      }
      return db.transaction(async (q) => {
        const inserted = await insert(q);
        const insertedKeys = new Set(inserted.map((r) => r.idempotency_key).filter((k) => k !== null));
        const repeatedKeys = tasks.map((t) => t.idempotencyKey).filter((k): k is string => k !== null && !insertedKeys.has(k));
        const existing = new Map<string, TaskRow>();
        if (repeatedKeys.length > 0) {
          for (const row of await q<TaskRow>('SELECT * FROM tasks WHERE idempotency_key = ANY($1::text[])', [repeatedKeys])) {
            existing.set(row.idempotency_key!, row);
          }
        }
        const results: TaskInsertResult[] = [];
        let next = 0;
        tasks.forEach((t, index) => {
          const key = t.idempotencyKey;
          if (key !== null && (existing.has(key) || !insertedKeys.has(key))) {
            const row = existing.get(key)!;
            params.onRepeat({ index, existing: { id: row.id, requestHash: row.request_hash } });
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
    },

    async taskGet(params) {
      const [row] = await query<TaskRow>('SELECT * FROM tasks WHERE id = $1', [params.id]);
      return row && toTask(row);
    },

    async taskList(params) {
      return mapPage(await db.page(lists.taskList(params)), toTask);
    },

    taskClaim(params) {
      return claims.run(params);
    },

    async taskComplete(params) {
      const row = await completions.run({ id: params.id, agentId: params.agentId, result: JSON.stringify(params.result ?? null), now: params.now });
      return written(row, params.id);
    },

    async taskFail(params) {
      // The rule needs the attempts the row holds: read it locked, decide, write, in one transaction.
      const ended = await db.transaction(async (q) => {
        const rows = await q<TaskRow>("SELECT * FROM tasks WHERE id = $1 AND status = 'leased' AND agent_id = $2 FOR UPDATE", [params.id, params.agentId]);
        return (await endLeases(q, rows, params.now, params.endLease))[0];
      });
      return ended ? { task: ended.task } : written(undefined, params.id);
    },

    async taskRelease(params) {
      const [row] = await query<TaskRow>(
        `UPDATE tasks SET status = $3, run_at = $4, attempts = greatest(0, attempts - 1), error = $5, updated_at = $6, lease_expires_at = NULL
         WHERE id = $1 AND status = 'leased' AND agent_id = $2 RETURNING *`,
        [params.id, params.agentId, params.status, params.runAt, JSON.stringify(params.error ?? null), params.now],
      );
      return written(row, params.id);
    },

    async taskExtendLease(params) {
      const [row] = await query<TaskRow>(TASK_EXTEND, [params.id, params.agentId, params.now, params.leaseMs ?? null]);
      return written(row, params.id);
    },

    async taskCancel(params) {
      const [row] = await query<TaskRow>(
        `UPDATE tasks SET status = 'cancelled', completed_at = $2, updated_at = $2, lease_expires_at = NULL
         WHERE id = $1 AND status = ANY($3::text[]) RETURNING *`,
        [params.id, params.now, params.from],
      );
      return written(row, params.id);
    },

    async taskRetry(params) {
      const [row] = await query<TaskRow>(
        `UPDATE tasks SET status = 'queued', attempts = 0, run_at = $2, updated_at = $2, completed_at = NULL, result = NULL,
           error = NULL, lease_expires_at = NULL
         WHERE id = $1 AND status = ANY($3::text[]) RETURNING *`,
        [params.id, params.now, params.from],
      );
      return written(row, params.id);
    },

    taskRescueExpiredLeases(params) {
      // Select, decide, update many, as river's rescuer does: SKIP LOCKED so that nodes sweeping at
      // the same moment take different leases.
      return db.transaction(async (q) => {
        const expired = await q<TaskRow>(
          `SELECT * FROM tasks WHERE status = 'leased' AND lease_expires_at <= $1
           ORDER BY lease_expires_at LIMIT $2 FOR UPDATE SKIP LOCKED`,
          [params.now, params.limit],
        );
        return endLeases(q, expired, params.now, params.endLease);
      });
    },

    async taskPromoteScheduled(params) {
      const rows = await query<TaskRow>(
        `UPDATE tasks SET status = 'queued', updated_at = $1 WHERE id IN (
           SELECT id FROM tasks WHERE status = 'scheduled' AND run_at <= $1 ORDER BY run_at LIMIT $2 FOR UPDATE SKIP LOCKED
         ) RETURNING *`,
        [params.now, params.limit],
      );
      return rows.sort((a, b) => a.run_at - b.run_at || a.id - b.id).map((row) => ({ task: toTask(row), from: 'scheduled' as const }));
    },

    async taskDeleteFinished(params) {
      const rows = await query<{ id: number }>(
        `DELETE FROM tasks WHERE id IN (
           SELECT id FROM tasks WHERE completed_at IS NOT NULL AND completed_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED
         ) RETURNING id`,
        [params.before, params.limit],
      );
      if (params.keepNewest === undefined || rows.length === params.limit) return rows.length;
      const beyond = await query<{ id: number }>(
        `DELETE FROM tasks WHERE id IN (
           SELECT id FROM tasks WHERE completed_at IS NOT NULL ORDER BY completed_at DESC LIMIT $1 OFFSET $2 FOR UPDATE SKIP LOCKED
         ) RETURNING id`,
        [params.limit - rows.length, params.keepNewest],
      );
      return rows.length + beyond.length;
    },

    async taskNextDeadlines() {
      const [row] = await query<{ lease: number | null; run: number | null }>(
        `SELECT (SELECT min(lease_expires_at) FROM tasks WHERE status = 'leased') AS lease,
                (SELECT min(run_at) FROM tasks WHERE status = 'scheduled') AS run`,
      );
      return { leaseExpiresAt: row.lease, runAt: row.run };
    },

    async taskCounts() {
      return query<TaskCount>('SELECT type, priority, status, sum(n)::bigint AS count FROM task_counts GROUP BY type, priority, status HAVING sum(n) > 0');
    },
  };

  return { store, endLeases };
}
