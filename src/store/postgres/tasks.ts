import { dependencyFailedError, notFound } from '../../domain/errors.js';
import type { QueuedGroup } from '../../domain/type-policies.js';
import { DEFAULT_NAMESPACE } from '../../domain/namespaces.js';
import { canClaim, claimKeysOf, namespaceRequirement, taskRequirementKey } from '../../domain/requirements.js';
import type { Agent, AgentStatus, Task, TaskCount, TaskWithoutPayload } from '../../domain/types.js';
import { mapPage } from '../keyset.js';
import * as lists from '../lists.js';
import {
  completedTask,
  taskWithoutPayload,
  columnsWithoutPayload,
  type TaskRowWithoutPayload,
  completionText,
  payloadText,
  countsOfNamespaces,
  dependenciesByTask,
  endingLease,
  leaseEndColumns,
  storedIdempotencyKey,
  toAgent,
  toTask,
  type AgentRow,
  type DependencyRow,
  type TaskRow,
} from '../rows.js';
import {
  CLAIM_BEAT_WRITE_MS,
  TASK_LOCK_TTL_MS,
  taskLockId,
  type EndLease,
  type LinkStart,
  type LockAcquireParams,
  type LockAcquireResult,
  type TaskClaimParams,
  type TaskClaimResult,
  type TaskInsertParams,
  type TaskInsertResult,
  type TaskStore,
  type TaskTransition,
  type TaskWrite,
} from '../store.js';
import { hotPathFunction, prepared, type PostgresDatabase, type Query } from './database.js';
import { TickBatcher } from './tick-batcher.js';
import { inGroup, PLAN_NEEDED, type PostgresAdmission } from './types.js';

const byClaimOrder = (a: Task, b: Task) => b.priority - a.priority || a.id - b.id;

/** Inserts a batch in one statement, in order, so that ids follow the batch's order. */
const TASK_INSERT = prepared('task_insert', `WITH inserted AS (
  INSERT INTO tasks (type, req_key, payload, priority, status, idempotency_key, request_hash,
    max_attempts, lease_ms, backoff_ms, run_at, created_at, updated_at, execution_timeout_ms, schedule_timeout_ms, expires_at, tags, metadata,
    concurrency_key, locks, namespace)
  SELECT type, req_key, payload, priority, status, idempotency_key, request_hash, max_attempts, lease_ms, backoff_ms, run_at, $12, $12,
    execution_timeout_ms, schedule_timeout_ms, expires_at, tags, metadata, concurrency_key, locks, namespace
  FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::text[], $6::text[], $7::text[], $8::int[], $9::bigint[],
    $10::bigint[], $11::bigint[], $13::bigint[], $14::bigint[], $15::bigint[], $16::text[], $17::text[], $18::text[], $19::text[], $20::text[]) WITH ORDINALITY
    AS i(type, req_key, payload, priority, status, idempotency_key, request_hash, max_attempts, lease_ms, backoff_ms, run_at,
      execution_timeout_ms, schedule_timeout_ms, expires_at, tags, metadata, concurrency_key, locks, namespace, ord)
  ORDER BY ord
  ON CONFLICT (idempotency_key) DO NOTHING
  RETURNING *
), tagged AS (
  -- In the same statement, so that a task and its tags commit together.
  INSERT INTO task_tags (tag, task_id)
  SELECT DISTINCT t.tag, inserted.id FROM inserted, json_array_elements_text(inserted.tags::json) AS t(tag)
)
SELECT * FROM inserted`);

/** The SQLSTATE fleetd_whole_batch raises: a key of the batch was taken already. */
const REPEATED_KEY = 'FL409';

/**
 * Raises REPEATED_KEY unless every task of the batch was inserted. A statement that raises is
 * undone whole, without a transaction around it.
 */
export const WHOLE_BATCH_FUNCTION = hotPathFunction(
  'fleetd_whole_batch',
  (name) => `CREATE OR REPLACE FUNCTION ${name}(inserted int, wanted int) RETURNS boolean LANGUAGE plpgsql AS $whole$
BEGIN
  IF inserted < wanted THEN
    RAISE EXCEPTION 'an idempotency key of the batch is taken' USING ERRCODE = '${REPEATED_KEY}';
  END IF;
  RETURN true;
END $whole$`,
);

/**
 * TASK_INSERT for a batch with idempotency keys, as the SDK's submits all have ($21: the batch's
 * size): when none of its keys is taken, as nearly always, the statement is the whole write, one
 * round trip instead of BEGIN, the insert and COMMIT. When one is taken, it raises and so writes
 * nothing (a statement is atomic): the batch goes again in a transaction, which answers the repeat.
 * When none was inserted it writes nothing either, and answers no row.
 */
const TASK_INSERT_WHOLE = prepared(
  'task_insert_whole',
  TASK_INSERT.text.replace(/SELECT \* FROM inserted$/, `SELECT * FROM inserted WHERE (SELECT ${WHOLE_BATCH_FUNCTION.name}(count(*)::int, $21) FROM inserted)`),
);

/**
 * What a write answers when it needs no payload (a completion, a failure, an extension, a release,
 * a lease's end): every column but the payload, which a long prompt would have de-TOASTed and sent
 * back for nothing (TaskWithoutPayload). For statements on `tasks t`.
 */
const RETURNING_WITHOUT_PAYLOAD = `RETURNING ${columnsWithoutPayload('t')}`;

/**
 * Ends leases as core decided, in one statement whatever their number: $1 ids, $2 statuses,
 * $3 run_at (NULL keeps the row's), $4 completed_at, $5 errors (JSON), $6 now. A lease that ended
 * meanwhile (completed, cancelled) is left alone.
 */
const END_LEASES = prepared('end_leases', `UPDATE tasks t SET status = u.status, run_at = coalesce(u.run_at, t.run_at),
    completed_at = u.completed_at, error = u.error, updated_at = $6, lease_expires_at = NULL
  FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::text[]) AS u(id, status, run_at, completed_at, error)
  WHERE t.id = u.id AND t.status = 'leased' ${RETURNING_WITHOUT_PAYLOAD}`);

/** The requirement keys with queued tasks, each with its requirements (`reqs`). */
const QUEUED_KEYS = `SELECT req_key, string_to_array(req_key, E'\\n') AS reqs FROM task_counts
    WHERE status = 'queued' GROUP BY req_key HAVING sum(n) > 0`;

/**
 * Whether an agent of claim keys `keys` (a text[]) and namespace requirement `namespace` (NULL for
 * default) may take tasks of requirements `reqs`. Outside default, the agent's keys hold its
 * namespace's requirement, which must also be among the task's, or it would take default's tasks
 * (see canClaim in domain/requirements.ts).
 */
const mayTake = (reqs: string, keys: string, namespace: string) => `${reqs} <@ ${keys} AND (${namespace} IS NULL OR ${namespace} = ANY(${reqs}))`;

/**
 * Claims of agents that claim once each and may all take the same requirement keys (`keys`, a
 * query answering req_key), in one statement: `claims`, a JSON array of {ord, agentId, max, now,
 * maxConcurrency, claimId}. Each agent's room is its maxConcurrency less its leases. The queued tasks of
 * those keys are picked in priority order, as many as the claims together have room for, and dealt
 * out in the claims' order: the first claim gets the first tasks, as if each claim had run alone in
 * turn. Answers the claims' ords in order (`ords`) and for each its room before the claim
 * (`room_free`) and the tasks it leased (`leased_tasks`): `claims`, a json[], whose entries the
 * tick's function places without parsing them again. A claim that may take several keys locks up
 * to the claims' whole room in each and leases the best: the ids of the rows it locked and did not
 * lease are `unleased` (see ANNOUNCE_UNLEASED_FUNCTION).
 */
const claimStatement = (claims: string, keys: string) => `WITH room AS MATERIALIZED (
    SELECT (c->>'ord')::int AS ord, c->>'agentId' AS agent_id, (c->>'now')::bigint AS now, (c->>'max')::int AS max, (c->>'claimId')::bigint AS claim_id,
      (c->>'maxConcurrency')::int - (SELECT count(*)::int FROM tasks WHERE agent_id = c->>'agentId' AND status = 'leased') AS free
    FROM jsonb_array_elements(${claims}) AS c
  ), claim AS (
    SELECT room.*, greatest(0, least(max, free)) AS take FROM room
  ), slots AS (
    SELECT c.ord, s.n, c.agent_id, c.now, c.claim_id FROM claim c CROSS JOIN LATERAL generate_series(1, c.take) AS s(n)
  ), locked AS (
    SELECT c.id, c.priority FROM (${keys}) k CROSS JOIN LATERAL (
      -- A task past its expires_at is never handed out, even before the expirer has swept it.
      SELECT id, priority FROM tasks
      WHERE status = 'queued' AND req_key = k.req_key AND (expires_at IS NULL OR expires_at > (SELECT max(now) FROM claim))
      ORDER BY priority DESC, id LIMIT (SELECT coalesce(sum(take), 0) FROM claim) FOR UPDATE SKIP LOCKED
    ) c
  ), picked AS (
    SELECT id, priority FROM locked ORDER BY priority DESC, id LIMIT (SELECT coalesce(sum(take), 0) FROM claim)
  ), leased AS (
    UPDATE tasks t SET status = 'leased', agent_id = d.agent_id, attempts = t.attempts + 1, claim_id = d.claim_id, claimed_at = d.now, updated_at = d.now,
      lease_expires_at = d.now + least(t.lease_ms, t.execution_timeout_ms), expires_at = NULL
    -- least() skips a NULL execution_timeout_ms: the lease never runs past the attempt's timeout.
    -- The picked tasks in priority order zipped with the claims' slots in order: the deal. By
    -- primary key from arrays, as the planner looks the few picked ids up one by one; joined to the
    -- CTE instead, it may hash the whole table. (By ctid, a row updated after the statement's
    -- snapshot but before its lock would be skipped, unleased, where by id it is rechecked.)
    FROM unnest(ARRAY(SELECT id FROM picked ORDER BY priority DESC, id), ARRAY(SELECT agent_id FROM slots ORDER BY ord, n),
      ARRAY(SELECT now FROM slots ORDER BY ord, n), ARRAY(SELECT ord FROM slots ORDER BY ord, n),
      ARRAY(SELECT claim_id FROM slots ORDER BY ord, n)) AS d(id, agent_id, now, ord, claim_id)
    WHERE t.id = d.id
    RETURNING d.ord, t AS task
  ), leased_by_claim AS (
    SELECT ord, json_agg(task) AS tasks FROM leased GROUP BY ord
  )
  SELECT array_agg(c.ord ORDER BY c.ord) AS ords,
    array_agg(json_build_object('room_free', c.free, 'leased_tasks', coalesce(l.tasks, '[]')) ORDER BY c.ord) AS claims,
    ARRAY(SELECT id FROM locked WHERE id NOT IN (SELECT id FROM picked)) AS unleased
  FROM claim c LEFT JOIN leased_by_claim l ON l.ord = c.ord`;

/**
 * Announces to every node, at commit, the tasks among `ids` still queued: rows a claim locked and
 * did not lease (claimStatement's `unleased`). Another claim meanwhile skipped them (SKIP LOCKED)
 * and may have found nothing, and nothing else would tell it that they are free: a waiter that
 * found every task it could take waits for an announcement. Unlike fleetd_notify_available's, the
 * claiming node hears it too (its own claims skip the rows another of its transactions locks). One
 * notification a key, as a claim's keys are few.
 */
export const ANNOUNCE_UNLEASED_FUNCTION = hotPathFunction(
  'fleetd_announce_unleased',
  (name) => `CREATE OR REPLACE FUNCTION ${name}(ids bigint[]) RETURNS void LANGUAGE plpgsql AS $announce$
DECLARE
  k record;
BEGIN
  IF coalesce(cardinality(ids), 0) = 0 THEN RETURN; END IF;
  FOR k IN SELECT req_key, count(*) AS n FROM tasks WHERE id = ANY(ids) AND status = 'queued' GROUP BY req_key LOOP
    PERFORM pg_notify('fleetd_tasks_available',
      jsonb_build_object('schema', current_schema(), 'node', '', 'byRequirement', jsonb_build_object(k.req_key, k.n))::text);
  END LOOP;
END $announce$`,
);

/** One agent's claim: $1 the claim as claimStatement takes it (a list of one), $2 its claim keys, $3 its namespace requirement. */
export const TASK_CLAIM = prepared(
  'task_claim',
  claimStatement('$1::jsonb', `SELECT q.req_key FROM (${QUEUED_KEYS}) q WHERE ${mayTake('q.reqs', '$2::text[]', '$3::text')}`),
);

/** The claiming agents' rows (`ids`, a text[]), locked in id order so that two nodes' claims cannot deadlock: the CTE `old`. */
const lockAgentsForClaim = (ids: string) => `old AS (SELECT * FROM agents WHERE id = ANY(${ids}) ORDER BY id FOR UPDATE)`;

/**
 * A claim is its agents' heartbeat: the CTE `touched` writes it into the rows `old` locked, for an
 * agent that was not online or whose last write is CLAIM_BEAT_WRITE_MS old (an UPDATE of every
 * claiming agent at every tick was most of a busy tick's time). `claimingAgents` then answers
 * every locked row as the claim left it, with its status before (`previous_status`).
 */
const touchAgentsForClaim = (at: string) =>
  `touched AS (UPDATE agents a SET last_heartbeat_at = ${at}, status = 'online' FROM old
    WHERE a.id = old.id AND (old.status <> 'online' OR old.last_heartbeat_at <= ${at} - ${CLAIM_BEAT_WRITE_MS})
    RETURNING a.*, old.status AS previous_status)`;
const claimingAgents = `(SELECT * FROM touched UNION ALL SELECT old.*, old.status FROM old WHERE old.id NOT IN (SELECT id FROM touched))`;

/**
 * A tick's plain claims in one round trip, without BEGIN and COMMIT: one statement is a transaction
 * of its own. It locks the claiming agents' rows in id order and records the claim as their
 * heartbeat (with AGENT_CLAIM_LOCK's text), then claims in rounds: an agent's first claim of the
 * tick in the first round, its second in the second, and in each round one claimStatement for the
 * claims that may take the same one requirement key with queued tasks (nearly always all of them:
 * the key pinning tasks to an agent has none queued). A round sees the leases of the ones before
 * it, so two claims by one agent take turns, as two by one agent on two nodes do on its row's lock.
 * (A statement a claim cost a busy tick most of its time, each planned and started on its own.)
 * A claim that may take tasks of several keys goes alone: the statement locks up to its claims'
 * whole room in each key, and leases the best of them, so the rows of the other keys it locks stay
 * locked to the tick's end, skipped by other claims; alone, a claim holds at most its own room in
 * each key, and the tick's later claims take those rows first. Those still queued at the end are
 * announced (fleetd_announce_unleased), at the commit that frees them.
 * The four round trips of a transaction had kept the agents' rows locked across three waits for
 * the node, and cost the node a socket write and the backend a wake-up each. Its parameters are
 * plpgsql variables, so the plan is cached as a prepared statement's is: kept from the first calls,
 * it may have been made while the tables were a page or two (a new deployment, before autovacuum
 * first analyzes them), and a sequential scan then stays on every claim however large the table
 * grows. `enable_seqscan = off` keeps every statement here on its index. When a plan is needed
 * (policies, pauses, concurrency keys or locks on queued tasks) it does nothing and answers null:
 * those claims need core's plan, between statements of a transaction. Built from TASK_CLAIM's
 * parts, so the two cannot drift.
 *
 * Answers the agents' rows as the heartbeat left them (each with its previous status), and one
 * entry a claim, in the order given: the agent's room before the claim and the tasks it leased,
 * or null when the agent is gone.
 */
export const CLAIM_TICK_FUNCTION = hotPathFunction(
  'fleetd_claim_tick',
  (name) => `CREATE OR REPLACE FUNCTION ${name}(agent_ids text[], heartbeat_at bigint, claims jsonb)
  RETURNS TABLE (agents json, claimed json) LANGUAGE plpgsql SET enable_seqscan = off SET plan_cache_mode = force_generic_plan AS $claim_tick$
DECLARE
  round record; round_ords int[]; round_claims json[];
  locked json; locked_ids text[];
  round_unleased bigint[]; unleased bigint[] := '{}';
  results json[] := array_fill(NULL::json, ARRAY[jsonb_array_length(claims)]);
BEGIN
  IF ${PLAN_NEEDED} THEN
    RETURN QUERY SELECT NULL::json, NULL::json;
    RETURN;
  END IF;
  WITH ${lockAgentsForClaim('agent_ids')}, ${touchAgentsForClaim('heartbeat_at')}
  SELECT coalesce(json_agg(r.*), '[]'), coalesce(array_agg(r.id), '{}') FROM ${claimingAgents} r INTO locked, locked_ids;
  FOR round IN
    WITH queued AS MATERIALIZED (${QUEUED_KEYS})
    SELECT c.keys, jsonb_agg(c.claim ORDER BY c.ord) AS claims FROM (
      SELECT e.value || jsonb_build_object('ord', e.ord) AS claim, e.ord, k.keys,
        row_number() OVER (PARTITION BY e.value->>'agentId' ORDER BY e.ord) AS turn,
        CASE WHEN cardinality(k.keys) > 1 THEN e.ord END AS alone
      FROM jsonb_array_elements(claims) WITH ORDINALITY AS e(value, ord)
        CROSS JOIN LATERAL (SELECT ARRAY(SELECT jsonb_array_elements_text(e.value->'keys')) AS keys) a
        CROSS JOIN LATERAL (
          SELECT ARRAY(SELECT q.req_key FROM queued q WHERE ${mayTake('q.reqs', 'a.keys', "(e.value->>'namespace')")} ORDER BY 1) AS keys
        ) k
      WHERE e.value->>'agentId' = ANY(locked_ids)
    ) c
    GROUP BY c.turn, c.keys, c.alone ORDER BY c.turn, min(c.ord)
  LOOP
    ${claimStatement('round.claims', 'SELECT unnest(round.keys) AS req_key')} INTO round_ords, round_claims, round_unleased;
    FOR i IN 1..cardinality(round_ords) LOOP
      results[round_ords[i]] := round_claims[i];
    END LOOP;
    unleased := unleased || round_unleased;
  END LOOP;
  PERFORM ${ANNOUNCE_UNLEASED_FUNCTION.name}(unleased);
  RETURN QUERY SELECT locked, array_to_json(results);
END $claim_tick$`,
);

/** A claim as TASK_CLAIM answers it. */
type ClaimedRow = { room_free: number; leased_tasks: TaskRow[] };

/** A plain claim's result from its answer: the tasks best first, and the agent's room left after them. */
function claimedResult(agent: Agent, previousStatus: AgentStatus, one: ClaimedRow): TaskClaimResult {
  const tasks = one.leased_tasks.map(toTask).sort(byClaimOrder);
  return { agent, previousStatus, tasks, room: Math.max(0, one.room_free - tasks.length), heldBack: {}, retryAt: null };
}

const CLAIM_TICK = prepared('claim_tick', `SELECT agents, claimed FROM ${CLAIM_TICK_FUNCTION.name}($1::text[], $2::bigint, $3::jsonb)`);

/** An agent's leases, counted by a claim under a plan. */
const IN_FLIGHT = prepared('in_flight', "SELECT count(*)::int AS n FROM tasks WHERE agent_id = $1 AND status = 'leased'");

/** Completes the tasks of a batch still leased to their agents: $1 ids, $2 agents, $3 results (JSON), $4 times. */
const TASK_COMPLETE = prepared(
  'task_complete',
  `UPDATE tasks t SET status = 'completed', result = u.result, completed_at = u.now, updated_at = u.now, lease_expires_at = NULL
   FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[]) AS u(id, agent_id, result, now)
   WHERE t.id = u.id AND t.status = 'leased' AND t.agent_id = u.agent_id AND NOT t.has_dependents
   ${RETURNING_WITHOUT_PAYLOAD}`,
);

/** The same for tasks that others depend on, inside the transaction that releases those. */
const TASK_COMPLETE_DEPENDED_ON = prepared(
  'task_complete_depended_on',
  `UPDATE tasks t SET status = 'completed', result = u.result, completed_at = u.now, updated_at = u.now, lease_expires_at = NULL
   FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[]) AS u(id, agent_id, result, now)
   WHERE t.id = u.id AND t.status = 'leased' AND t.agent_id = u.agent_id AND t.has_dependents
   ${RETURNING_WITHOUT_PAYLOAD}`,
);

/**
 * Copies the outcomes of tasks that just finished ($1 ids, $2 statuses, $3 results, $4 errors) to
 * the tasks depending on them, and applies the decision core made at submit, which the rows carry:
 * a failure cancels a dependent ($6: the error it records) unless it runs on failures; the last
 * dependency releases it as a new task starts, by its runAt ($5: now). The dependents are locked in
 * id order first, so that two nodes finishing dependencies of the same tasks cannot deadlock.
 */
const SETTLE_DEPENDENTS = prepared('settle_dependents', `WITH e AS (
    UPDATE task_dependencies d SET status = f.status, result = f.result, error = f.error
    FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[]) AS f(id, status, result, error)
    WHERE d.depends_on = f.id AND d.status IS NULL
    RETURNING d.task_id, f.status <> 'completed' AS failed
  ), c AS (
    SELECT task_id, count(*)::int AS n, bool_or(failed) AS failed FROM e GROUP BY task_id
  ), l AS (
    SELECT id FROM tasks WHERE id IN (SELECT task_id FROM c) AND status = 'waiting' ORDER BY id FOR UPDATE
  )
  UPDATE tasks t SET deps_pending = t.deps_pending - c.n,
    status = CASE WHEN c.failed AND t.on_dependency_failure = 'cancel' THEN 'cancelled'
                  WHEN t.deps_pending > c.n THEN 'waiting'
                  WHEN t.run_at > $5 THEN 'scheduled' ELSE 'queued' END,
    completed_at = CASE WHEN c.failed AND t.on_dependency_failure = 'cancel' THEN $5 ELSE t.completed_at END,
    error = CASE WHEN c.failed AND t.on_dependency_failure = 'cancel' THEN $6 ELSE t.error END,
    updated_at = $5
  FROM c WHERE t.id = c.task_id AND t.id IN (SELECT id FROM l) AND t.status = 'waiting'
  RETURNING t.*`);

/**
 * Locks the tasks new ones depend on, in id order, and marks them depended on: a completion that
 * waited for the lock then takes the path that releases dependents. Answers their status now.
 */
const LOCK_DEPENDED_ON = prepared('lock_depended_on', `WITH l AS (SELECT id FROM tasks WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE)
  UPDATE tasks t SET has_dependents = true FROM l WHERE t.id = l.id RETURNING t.id, t.status, t.result, t.error, t.namespace`);

/** Records links of new tasks: $1 ids, $2 parents, $3 dependency counts, $4 pending, $5 on failure, $6 now, $7 the error of one cancelled at once. */
const SET_LINKS = prepared('set_links', `UPDATE tasks t SET parent_id = u.parent_id, deps_total = u.total, deps_pending = u.pending,
    on_dependency_failure = u.on_failure,
    completed_at = CASE WHEN t.status = 'cancelled' THEN $6 ELSE t.completed_at END,
    error = CASE WHEN t.status = 'cancelled' THEN $7 ELSE t.error END
  FROM unnest($1::bigint[], $2::bigint[], $3::int[], $4::int[], $5::text[]) AS u(id, parent_id, total, pending, on_failure)
  WHERE t.id = u.id RETURNING t.*`);

const INSERT_EDGES = prepared('insert_edges', `INSERT INTO task_dependencies (task_id, depends_on, status, result, error)
  SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[]) ON CONFLICT DO NOTHING`);

const FINISHED = new Set(['completed', 'dead', 'cancelled']);
const failedError = JSON.stringify(dependencyFailedError);

/**
 * Ends the leases of a tick's failures as core decided for each: $1 ids, $2 statuses, $3 run_at
 * (NULL keeps the row's), $4 completed_at, $5 errors (JSON), $6 each failure's now.
 */
const FAIL_LEASES = prepared('fail_leases', `UPDATE tasks t SET status = u.status, run_at = coalesce(u.run_at, t.run_at),
    completed_at = u.completed_at, error = u.error, updated_at = u.now, lease_expires_at = NULL
  FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::bigint[]) AS u(id, status, run_at, completed_at, error, now)
  WHERE t.id = u.id AND t.status = 'leased' ${RETURNING_WITHOUT_PAYLOAD}`);

/**
 * Extends the leases of a tick's extensions still held by their agents: $1 ids, $2 agents, $3 times,
 * $4 lease ms (NULL: the task's own). least() skips a NULL execution_timeout_ms: a lease never runs
 * past the attempt's timeout.
 */
const TASK_EXTEND_MANY = prepared(
  'task_extend_many',
  `UPDATE tasks t SET lease_expires_at = least(u.now + coalesce(u.lease_ms, t.lease_ms), t.claimed_at + t.execution_timeout_ms), updated_at = u.now
   FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[]) AS u(id, agent_id, now, lease_ms)
   WHERE t.id = u.id AND t.status = 'leased' AND t.agent_id = u.agent_id
   ${RETURNING_WITHOUT_PAYLOAD}`,
);

/**
 * Locks the claiming agents' rows, in id order so that batches cannot deadlock, and records the
 * claim as their heartbeat: $1 agent ids, $2 now.
 */
const AGENT_CLAIM_LOCK = prepared(
  'agent_claim_lock',
  `WITH ${lockAgentsForClaim('$1::text[]')}, ${touchAgentsForClaim('$2::bigint')}
   SELECT r.*, ${PLAN_NEEDED} AS plan_needed FROM ${claimingAgents} r`,
);

/** The tasks area of the PostgreSQL driver, and the lease ending that agents' release shares. */
export function postgresTasks(
  db: PostgresDatabase,
  admission: PostgresAdmission,
  acquireLock: (q: Query, params: LockAcquireParams) => Promise<LockAcquireResult>,
): {
  store: TaskStore;
  endLeases: (q: Query, rows: TaskRowWithoutPayload[], now: number, endLease: EndLease) => Promise<TaskTransition[]>;
  settleDependents: (q: Query, finished: TaskRow[], now: number) => Promise<TaskTransition[]>;
} {
  const query: Query = (text, values) => db.query(text, values);

  /**
   * Reads of tasks by id in one tick share one statement. A plain-HTTP agent's completion answered
   * whole (without ?return=minimal) reads its task before its write (TaskService.whole): 50 such
   * agents on one node had made a statement a task, each waiting for a pooled connection, and
   * drained at a third of the rate, the backends spending 2.5 times as much a task.
   */
  const reads = new TickBatcher<number, Task | undefined>(async (ids) => {
    // An id no task can have (past 2^53, or not an integer) is no task's, and is not sent: out of
    // bigint's range it would fail the statement, and every read of the tick with it.
    const asked = ids.filter((id) => Number.isSafeInteger(id) && id > 0);
    const rows = asked.length === 0 ? [] : await query<TaskRow>('SELECT * FROM tasks WHERE id = ANY($1::bigint[])', [asked]);
    const byId = new Map(rows.map((row) => [Number(row.id), row]));
    return ids.map((id) => {
      const row = byId.get(id);
      return row && toTask(row);
    });
  });

  /**
   * Completions of one tick share one statement and one commit: one statement is atomic on its
   * own, so it runs without BEGIN and COMMIT, one round trip instead of three.
   */
  const completions = new TickBatcher<{ id: number; agentId: string; result: string; now: number }, { row?: TaskRowWithoutPayload; released: TaskTransition[] }>(
    async (batch) => {
      const columns = (calls: typeof batch) => [calls.map((c) => c.id), calls.map((c) => c.agentId), calls.map((c) => c.result), calls.map((c) => c.now)];
      const rows = await query<TaskRowWithoutPayload>(TASK_COMPLETE, columns(batch));
      const byId = new Map(rows.map((row) => [Number(row.id), { row, released: [] as TaskTransition[] }]));
      // Refused, or depended on: those others depend on complete with their dependents' release.
      const rest = batch.filter((c) => !byId.has(c.id));
      if (rest.length > 0) {
        await db.transaction(async (q) => {
          const done = await q<TaskRowWithoutPayload>(TASK_COMPLETE_DEPENDED_ON, columns(rest));
          const released = await settleDependents(q, done, Math.max(...rest.map((c) => c.now)));
          for (const row of done) byId.set(Number(row.id), { row, released: [] });
          // The release is reported with the first completion of the batch that freed anything.
          if (done.length > 0) byId.get(Number(done[0].id))!.released = released;
        });
      }
      return batch.map((c) => byId.get(c.id) ?? { released: [] });
    },
    { unique: (c) => c.id },
  );

  /**
   * Failures of one tick share one transaction: their rows are read locked (the rule needs the
   * attempts they hold), each held lease ends as its own rule decides, in one statement.
   */
  type Failure = { id: number; agentId: string; now: number; endLease: EndLease };
  const failures = new TickBatcher<Failure, { row?: TaskRowWithoutPayload; released: TaskTransition[] }>(
    (batch) =>
      db.transaction(async (q) => {
        const rows = await q<TaskRowWithoutPayload>(`SELECT ${columnsWithoutPayload()} FROM tasks WHERE id = ANY($1::bigint[]) AND status = 'leased' ORDER BY id FOR UPDATE`, [
          batch.map((f) => f.id),
        ]);
        const leased = new Map(rows.map((row) => [row.id, row]));
        const held = batch.filter((f) => leased.get(f.id)?.agent_id === f.agentId);
        if (held.length === 0) return batch.map(() => ({ released: [] }));
        const ends = held.map((f) => leaseEndColumns(f.endLease(endingLease(leased.get(f.id)!)), f.now));
        const ended = await q<TaskRowWithoutPayload>(FAIL_LEASES, [
          held.map((f) => f.id),
          ends.map((e) => e.status),
          ends.map((e) => e.run_at),
          ends.map((e) => e.completed_at),
          ends.map((e) => e.error),
          held.map((f) => f.now),
        ]);
        const byId = new Map(ended.map((row) => [Number(row.id), { row, released: [] as TaskTransition[] }]));
        // Tasks waiting on those that went dead are settled in the same transaction; the release is
        // reported with the first failure of the batch.
        const released = await settleDependents(q, ended, Math.max(...held.map((f) => f.now)));
        if (released.length > 0) byId.get(Number(ended[0].id))!.released = released;
        return batch.map((f) => byId.get(f.id) ?? { released: [] });
      }),
    { unique: (f) => f.id },
  );

  /** Extensions of one tick share one statement, as completions do. */
  const extensions = new TickBatcher<{ id: number; agentId: string; now: number; leaseMs: number | null }, TaskRowWithoutPayload | undefined>(
    async (batch) => {
      const rows = await query<TaskRowWithoutPayload>(TASK_EXTEND_MANY, [
        batch.map((e) => e.id),
        batch.map((e) => e.agentId),
        batch.map((e) => e.now),
        batch.map((e) => e.leaseMs),
      ]);
      const byId = new Map(rows.map((row) => [row.id, row]));
      return batch.map((e) => byId.get(e.id));
    },
    { unique: (e) => e.id },
  );

  /**
   * What a claim needs to know of its agent. An agent's capabilities, labels, namespace and
   * maxConcurrency never change once it has registered, and its id (a random UUID) is never given
   * again, so the node reads them once: every later claim of the agent is one round trip. Bounded,
   * as a cache: a forgotten agent costs one read.
   */
  type ClaimShape = { keys: string[]; maxConcurrency: number; namespace: string | null };
  const claimShapes = new Map<string, ClaimShape>();
  const remember = (agent: Agent): ClaimShape => {
    if (claimShapes.size >= 100_000) claimShapes.clear();
    const shape = {
      keys: claimKeysOf(agent),
      maxConcurrency: agent.maxConcurrency,
      namespace: agent.namespace === DEFAULT_NAMESPACE ? null : namespaceRequirement(agent.namespace),
    };
    claimShapes.set(agent.id, shape);
    return shape;
  };
  /** Whether the last tick's claims needed core's plan: the next then goes to a transaction at once, without asking the function first. */
  let planNeeded = false;

  /**
   * Claims of one tick: one call of fleetd_claim_tick when none needs a plan, else one transaction
   * (claimBatch).
   */
  const claims = new TickBatcher<TaskClaimParams, TaskClaimResult>(
    async (batch) => (!planNeeded && (await plainClaims(batch))) || db.transaction((q) => claimBatch(q, batch)),
  );

  /** A tick's claims by one call of fleetd_claim_tick; undefined when a plan is needed (it then changed nothing). */
  async function plainClaims(batch: TaskClaimParams[]): Promise<(TaskClaimResult | Error)[] | undefined> {
    // The batch's shapes are held here: the cache may be cleared (by this tick's own reads too)
    // while the unknown agents are read, which would make the known ones look gone.
    const shapeOf = new Map<string, ClaimShape>();
    for (const { agentId } of batch) {
      const shape = claimShapes.get(agentId);
      if (shape) shapeOf.set(agentId, shape);
    }
    const unknown = [...new Set(batch.map((p) => p.agentId).filter((id) => !shapeOf.has(id)))];
    if (unknown.length > 0) {
      for (const row of await query<AgentRow>('SELECT * FROM agents WHERE id = ANY($1::text[])', [unknown])) shapeOf.set(row.id, remember(toAgent(row)));
    }
    const shapes = batch.map((p) => shapeOf.get(p.agentId));
    const known = batch.flatMap((p, at) => (shapes[at] ? [{ ...shapes[at], agentId: p.agentId, max: p.max, now: p.now, claimId: p.claimId ?? null }] : []));
    const missing = (p: TaskClaimParams) => notFound('agent', p.agentId);
    if (known.length === 0) return batch.map(missing);
    const [{ agents, claimed }] = await query<{
      agents: (AgentRow & { previous_status: AgentStatus })[] | null;
      claimed: (ClaimedRow | null)[] | null;
    }>(CLAIM_TICK, [
      [...new Set(known.map((p) => p.agentId))].sort(),
      Math.max(...known.map((p) => p.now)),
      JSON.stringify(known),
    ]);
    if (agents === null || claimed === null) {
      planNeeded = true;
      return undefined;
    }
    const byId = new Map(agents.map((row) => [row.id, { agent: toAgent(row), previousStatus: row.previous_status }]));
    const results: (TaskClaimResult | Error)[] = [];
    let k = 0;
    for (const [at, params] of batch.entries()) {
      const one = shapes[at] ? claimed[k++] : null;
      const found = byId.get(params.agentId);
      if (one === null || !found) {
        results[at] = missing(params);
        continue;
      }
      results[at] = claimedResult(found.agent, found.previousStatus, one);
      // A second claim by the same agent in this tick finds it online already.
      found.previousStatus = 'online';
    }
    return results;
  }

  /**
   * Inside one transaction, the claims of a tick when a plan may be needed. The agents' rows are
   * locked first (their heartbeats, in id order so that batches cannot deadlock), so that two
   * claims by one agent on two nodes take turns and cannot together exceed its maxConcurrency;
   * each claim then runs after the locks, so it counts the other claims' leases, including earlier
   * ones in this batch.
   */
  async function claimBatch(q: Query, batch: TaskClaimParams[]): Promise<(TaskClaimResult | Error)[]> {
    const ids = [...new Set(batch.map((p) => p.agentId))].sort();
    const rows = await q<AgentRow & { previous_status: AgentStatus; plan_needed: boolean }>(AGENT_CLAIM_LOCK, [ids, Math.max(...batch.map((p) => p.now))]);
    const agents = new Map(rows.map((row) => [row.id, { agent: toAgent(row), previousStatus: row.previous_status }]));
    planNeeded = rows.some((row) => row.plan_needed);
    const planned = planNeeded && batch.some((p) => p.plan);
    if (planned) await admission.lock(q);
    const results: (TaskClaimResult | Error)[] = [];
    const unleased: string[] = [];
    for (const [at, params] of batch.entries()) {
      const found = agents.get(params.agentId);
      if (!found) {
        results[at] = notFound('agent', params.agentId);
        continue;
      }
      const { agent, previousStatus } = found;
      // A second claim by the same agent in this batch finds it online already.
      found.previousStatus = 'online';
      if (planned && params.plan) {
        results[at] = { agent, previousStatus, ...(await plannedClaim(q, params, agent)) };
        continue;
      }
      // A claim without a plan, or the plan no longer needed since the tick began: the statement alone.
      const shape = remember(agent);
      const claim = { ord: 1, agentId: agent.id, max: params.max, now: params.now, maxConcurrency: shape.maxConcurrency, claimId: params.claimId ?? null };
      const [{ claims: [one], unleased: left }] = await q<{ claims: ClaimedRow[]; unleased: string[] }>(TASK_CLAIM, [JSON.stringify([claim]), shape.keys, shape.namespace]);
      results[at] = claimedResult(agent, previousStatus, one);
      unleased.push(...left);
    }
    if (unleased.length > 0) await q(`SELECT ${ANNOUNCE_UNLEASED_FUNCTION.name}($1::bigint[])`, [unleased]);
    return results;
  }

  /**
   * A claim under policies, pauses or concurrency keys: core's plan says which group goes next. The
   * turns that come down to one group are leased together (leaseHeads) while no queued task locks
   * resources; the others go a statement a task (the oldest head among the groups, leased), each
   * task's locks taken with it.
   */
  async function plannedClaim(q: Query, params: TaskClaimParams, agent: Agent): Promise<Omit<TaskClaimResult, 'agent' | 'previousStatus'>> {
    const [{ n: inFlight }] = await q<{ n: number }>(IN_FLIGHT, [agent.id]);
    const free = agent.maxConcurrency - inFlight;
    const room = Math.min(params.max, free);
    if (room <= 0) return { tasks: [], room: 0, heldBack: {}, retryAt: null };
    const keys = claimKeysOf(agent);
    let groups = await admission.groups(q, keys);
    // Outside default, default's groups pass the statement's subset test too (see canClaim).
    if (agent.namespace !== DEFAULT_NAMESPACE) {
      const held = new Set(keys);
      groups = groups.filter((g) => canClaim(g.reqKey, held, agent.namespace));
    }
    // locking: whether some queued task locks resources, as this claim read it; only then is a lease undone when its locks are held.
    const { state, locking } = await admission.read(q, params.now, groups);
    let plan = params.plan!(state, groups, params.now);
    const tasks: Task[] = [];
    let next = plan.next();
    // The plan's turns need no answer from the database while each comes down to one group and no
    // lock can turn a task away: those are leased in one statement, where a statement a task (29
    // round trips a claim in the fair benchmark) had kept keyed claims at a fifth of plain ones.
    if (!locking) {
      const taken: QueuedGroup[] = [];
      for (; next !== undefined && next.length === 1 && taken.length < room; next = plan.next()) {
        taken.push(next[0]);
        plan.took(next[0]);
      }
      const rows = taken.length > 0 ? await admission.leaseHeads(q, taken, agent.id, params.now, params.claimId ?? null) : [];
      if (rows) tasks.push(...rows.map(toTask));
      else {
        // A group had fewer tasks than counted: nothing was leased; the plan starts again, a task at a time.
        plan = params.plan!(state, groups, params.now);
        next = plan.next();
      }
    }
    // Tasks whose locks are held are passed over, each group's next task considered instead.
    const passed = new Map<QueuedGroup, number>();
    for (; next !== undefined && tasks.length < room; next = plan.next()) {
      if (locking) await q('SAVEPOINT fleetd_head');
      // A task that locks resources only where the claim read that some do and keeps a savepoint to
      // undo its lease; one queued since goes to the next claim.
      const row = await admission.leaseHead(q, next, agent.id, params.now, passed, params.claimId ?? null, locking);
      const group = row && next.find((g) => inGroup(row, g));
      if (row && group && row.locks !== '[]') {
        const resources = JSON.parse(row.locks) as string[];
        const taken = await acquireLock(q, {
          id: taskLockId(row.id),
          namespace: row.namespace,
          agentId: agent.id,
          resources,
          ttlMs: TASK_LOCK_TTL_MS,
          description: `task ${row.id}`,
          now: params.now,
          decide: plan.locks.decide,
          probes: plan.locks.probes(resources),
          line: plan.locks.line(resources),
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
  async function endLeases(q: Query, rows: TaskRowWithoutPayload[], now: number, endLease: EndLease): Promise<TaskTransition[]> {
    if (rows.length === 0) return [];
    const ends = rows.map((row) => leaseEndColumns(endLease(endingLease(row)), now));
    const ended = await q<TaskRowWithoutPayload>(END_LEASES, [
      rows.map((r) => r.id),
      ends.map((e) => e.status),
      ends.map((e) => e.run_at),
      ends.map((e) => e.completed_at),
      ends.map((e) => e.error),
      now,
    ]);
    const transitions = ended.sort((a, b) => a.id - b.id).map((row) => ({ task: taskWithoutPayload(row), from: 'leased' as const }));
    return [...transitions, ...(await settleDependents(q, ended, now))];
  }

  /**
   * Inside the transaction that finished these tasks: copies each outcome to the tasks depending on
   * it and releases (or cancels) those whose wait is over, then does the same for the tasks those
   * cancellations finish. Tasks nothing depends on cost nothing.
   */
  async function settleDependents(q: Query, finished: TaskRowWithoutPayload[], now: number): Promise<TaskTransition[]> {
    const released: TaskTransition[] = [];
    let round: TaskRowWithoutPayload[] = finished.filter((row) => row.has_dependents && FINISHED.has(row.status));
    while (round.length > 0) {
      const failed = (row: TaskRowWithoutPayload) => row.status !== 'completed';
      const rows = await q<TaskRow>(SETTLE_DEPENDENTS, [
        round.map((r) => r.id),
        round.map((r) => r.status),
        round.map((r) => (failed(r) ? null : r.result)),
        round.map((r) => (failed(r) ? r.error : null)),
        now,
        failedError,
      ]);
      const moved = rows.filter((row) => row.status !== 'waiting').sort((a, b) => a.id - b.id);
      for (const row of moved) released.push({ task: toTask(row), from: 'waiting' });
      round = moved.filter((row) => row.status === 'cancelled' && row.has_dependents);
    }
    return released;
  }

  /**
   * Inside the insert's transaction, before it: what exists of the new tasks' parents and
   * dependencies (the dependencies locked and marked depended on), and core's decision for each.
   */
  async function startLinked(q: Query, tasks: TaskInsertParams[], onLinks: Parameters<TaskStore['taskInsertMany']>[0]['onLinks']) {
    const linked = tasks.map((t, index) => ({ t, index })).filter(({ t }) => t.links);
    if (!onLinks) throw new Error('tasks with links need onLinks');
    const dependencyIds = [...new Set(linked.flatMap(({ t }) => t.links!.dependsOn))];
    const parentIds = [...new Set(linked.map(({ t }) => t.links!.parentId).filter((id): id is number => id !== null))];
    const deps = new Map<number, TaskRow>();
    if (dependencyIds.length > 0) for (const row of await q<TaskRow>(LOCK_DEPENDED_ON, [dependencyIds])) deps.set(Number(row.id), row);
    const parents = new Map<number, string>();
    if (parentIds.length > 0) {
      for (const row of await q<{ id: number; namespace: string }>('SELECT id, namespace FROM tasks WHERE id = ANY($1::bigint[])', [parentIds])) {
        parents.set(Number(row.id), row.namespace);
      }
    }
    const starts = new Map<number, { start: LinkStart; deps: TaskRow[] }>();
    for (const { t, index } of linked) {
      const links = t.links!;
      // A task of another namespace is not found, as one that does not exist.
      const found = links.dependsOn.map((id) => deps.get(id)).filter((row): row is TaskRow => row !== undefined && row.namespace === t.namespace);
      const start = onLinks({
        index,
        parentFound: links.parentId !== null && parents.get(links.parentId) === t.namespace,
        dependencies: found.map((row) => ({ id: Number(row.id), status: row.status })),
      });
      starts.set(index, { start, deps: found });
    }
    return starts;
  }

  /** After the insert, in its transaction: the links of the new tasks and their dependency edges. */
  async function writeLinks(q: Query, created: { t: TaskInsertParams; row: TaskRow; deps: TaskRow[]; start: LinkStart }[], now: number): Promise<Map<number, TaskRow>> {
    const out = new Map<number, TaskRow>();
    if (created.length === 0) return out;
    const rows = await q<TaskRow>(SET_LINKS, [
      created.map((c) => c.row.id),
      created.map((c) => c.t.links!.parentId),
      created.map((c) => c.t.links!.dependsOn.length),
      created.map((c) => c.start.pending),
      created.map((c) => c.t.links!.onDependencyFailure),
      now,
      failedError,
    ]);
    for (const row of rows) out.set(Number(row.id), row);
    const edges = created.flatMap((c) =>
      c.deps.map((d) => {
        const done = FINISHED.has(d.status);
        return [c.row.id, d.id, done ? d.status : null, d.status === 'completed' ? d.result : null, done && d.status !== 'completed' ? d.error : null] as const;
      }),
    );
    if (edges.length > 0) await q(INSERT_EDGES, [0, 1, 2, 3, 4].map((i) => edges.map((e) => e[i])));
    return out;
  }

  /** The result of a conditional write, as `asTask` makes it (without the payload, for a row read without it), or the task as it is now. */
  async function written<R extends TaskRowWithoutPayload, T extends TaskWithoutPayload>(row: R | undefined, id: number, asTask: (row: R) => T): Promise<TaskWrite<T>> {
    return row ? { task: asTask(row) } : refusedWrite(id);
  }

  /** A conditional write that did not hold: the task as it is now. */
  async function refusedWrite(id: number): Promise<{ task: undefined; current: Task | undefined }> {
    const [current] = await query<TaskRow>('SELECT * FROM tasks WHERE id = $1', [id]);
    return { task: undefined, current: current && toTask(current) };
  }

  const store: TaskStore = {
    async taskInsertMany(params) {
      const { tasks, now } = params;
      const keys = tasks.map((t) => storedIdempotencyKey(t.namespace, t.idempotencyKey));
      let starts = new Map<number, { start: LinkStart; deps: TaskRow[] }>();
      const insert = (q: Query, statement = TASK_INSERT) =>
        q<TaskRow>(statement, [
          tasks.map((t) => t.type),
          tasks.map((t) => taskRequirementKey(t)),
          tasks.map(payloadText),
          tasks.map((t) => t.priority),
          tasks.map((t, i) => starts.get(i)?.start.status ?? t.status),
          keys,
          tasks.map((t) => t.requestHash),
          tasks.map((t) => t.maxAttempts),
          tasks.map((t) => t.leaseMs),
          tasks.map((t) => t.backoffMs),
          tasks.map((t) => t.runAt),
          now,
          tasks.map((t) => t.executionTimeoutMs),
          tasks.map((t) => t.scheduleTimeoutMs),
          tasks.map((t) => t.expiresAt),
          tasks.map((t) => JSON.stringify(t.tags)),
          tasks.map((t) => JSON.stringify(t.metadata)),
          tasks.map((t) => t.concurrencyKey ?? ''),
          tasks.map((t) => JSON.stringify(t.locks ?? [])),
          tasks.map((t) => t.namespace),
          ...(statement === TASK_INSERT_WHOLE ? [tasks.length] : []),
        ]).then((rows) => rows.sort((a, b) => a.id - b.id));
      const linked = tasks.some((t) => t.links);
      if (!linked && keys.every((k) => k === null)) {
        // Without idempotency keys nothing can repeat: the one statement is the whole transaction.
        return (await insert(query)).map((row) => ({ task: toTask(row), created: true }));
      }
      if (!linked) {
        // With keys, the same statement, undone whole when a key is taken (then the transaction below).
        const rows = await insert(query, TASK_INSERT_WHOLE).catch((err: { code?: string }) => {
          if (err.code === REPEATED_KEY) return [];
          throw err;
        });
        if (rows.length === tasks.length) return rows.map((row) => ({ task: toTask(row), created: true }));
      }
      return db.transaction(async (q) => {
        if (linked) starts = await startLinked(q, tasks, params.onLinks);
        const inserted = await insert(q);
        const insertedKeys = new Set(inserted.map((r) => r.idempotency_key).filter((k) => k !== null));
        const repeatedKeys = keys.filter((k): k is string => k !== null && !insertedKeys.has(k));
        const existing = new Map<string, TaskRow>();
        if (repeatedKeys.length > 0) {
          for (const row of await q<TaskRow>('SELECT * FROM tasks WHERE idempotency_key = ANY($1::text[])', [repeatedKeys])) {
            existing.set(row.idempotency_key!, row);
          }
        }
        const results: { row: TaskRow; created: boolean }[] = [];
        const createdLinked: { t: TaskInsertParams; row: TaskRow; deps: TaskRow[]; start: LinkStart }[] = [];
        let next = 0;
        tasks.forEach((t, index) => {
          const key = keys[index];
          if (key !== null && (existing.has(key) || !insertedKeys.has(key))) {
            const row = existing.get(key)!;
            params.onRepeat({ index, existing: { id: row.id, requestHash: row.request_hash } });
            results.push({ row, created: false });
            return;
          }
          const row = inserted[next++];
          // A key repeated later in the same batch refers to this row.
          if (key !== null) existing.set(key, row);
          const start = starts.get(index);
          if (start) createdLinked.push({ t, row, ...start });
          results.push({ row, created: true });
        });
        const withLinks = await writeLinks(q, createdLinked, now);
        return results.map(({ row, created }): TaskInsertResult => ({ task: toTask((created && withLinks.get(Number(row.id))) || row), created }));
      });
    },

    taskGet(params) {
      return reads.run(params.id);
    },

    async taskList(params) {
      return mapPage(await db.page(lists.taskList(params)), toTask);
    },

    taskClaim(params) {
      return claims.run(params);
    },

    taskLeasedByClaims(params) {
      // The agent's row first: a claim of the agent still running (waiting on that lock, say) holds it
      // to its commit, and the read that follows sees what it leased.
      return db.transaction(async (q) => {
        await q('SELECT 1 FROM agents WHERE id = $1 FOR SHARE', [params.agentId]);
        const rows = await q<TaskRow>("SELECT * FROM tasks WHERE agent_id = $1 AND status = 'leased' AND claim_id = ANY($2::bigint[])", [
          params.agentId,
          params.claimIds,
        ]);
        return rows.map(toTask);
      });
    },

    async taskComplete(params) {
      const { row, released } = await completions.run({ id: params.id, agentId: params.agentId, result: completionText(params), now: params.now });
      if (!row) return refusedWrite(params.id);
      const task = completedTask(row, params);
      return released.length > 0 ? { task, released } : { task };
    },

    async taskFail(params) {
      // The rule needs the attempts the row holds: read it locked, decide, write, in one transaction.
      const { row, released } = await failures.run({ id: params.id, agentId: params.agentId, now: params.now, endLease: params.endLease });
      if (!row) return refusedWrite(params.id);
      const task = taskWithoutPayload(row);
      return released.length > 0 ? { task, released } : { task };
    },

    async taskRelease(params) {
      const [row] = await query<TaskRowWithoutPayload>(
        `UPDATE tasks t SET status = $3, run_at = $4, attempts = greatest(0, attempts - 1), error = $5, updated_at = $6, lease_expires_at = NULL
         WHERE id = $1 AND status = 'leased' AND agent_id = $2 ${RETURNING_WITHOUT_PAYLOAD}`,
        [params.id, params.agentId, params.status, params.runAt, JSON.stringify(params.error ?? null), params.now],
      );
      return written(row, params.id, taskWithoutPayload);
    },

    async taskExtendLease(params) {
      const row = await extensions.run({ id: params.id, agentId: params.agentId, now: params.now, leaseMs: params.leaseMs ?? null });
      return written(row, params.id, taskWithoutPayload);
    },

    async taskCancel(params) {
      // In one transaction with the release of what depended on the task.
      const cancelled = await db.transaction(async (q) => {
        const [row] = await q<TaskRow>(
          `UPDATE tasks SET status = 'cancelled', completed_at = $2, updated_at = $2, lease_expires_at = NULL, error = $4
           WHERE id = $1 AND status = ANY($3::text[]) RETURNING *`,
          [params.id, params.now, params.from, JSON.stringify(params.error ?? null)],
        );
        return row && { row, released: await settleDependents(q, [row], params.now) };
      });
      if (!cancelled) return refusedWrite(params.id);
      const task = toTask(cancelled.row);
      return cancelled.released.length > 0 ? { task, released: cancelled.released } : { task };
    },

    async taskRetry(params) {
      const [row] = await query<TaskRow>(
        `UPDATE tasks SET status = 'queued', attempts = 0, run_at = $2, updated_at = $2, completed_at = NULL, result = NULL,
           error = NULL, lease_expires_at = NULL
         WHERE id = $1 AND status = ANY($3::text[]) RETURNING *`,
        [params.id, params.now, params.from],
      );
      return written(row, params.id, toTask);
    },

    taskRescueExpiredLeases(params) {
      // Select, decide, update many, as river's rescuer does: SKIP LOCKED so that nodes sweeping at
      // the same moment take different leases.
      return db.transaction(async (q) => {
        const expired = await q<TaskRowWithoutPayload>(
          `SELECT ${columnsWithoutPayload()} FROM tasks WHERE status = 'leased' AND lease_expires_at <= $1
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

    taskExpireUnclaimed(params) {
      return db.transaction(async (q) => {
        const rows = await q<TaskRow>(
          `SELECT * FROM tasks WHERE expires_at <= $1 AND expires_at IS NOT NULL AND status IN ('queued', 'scheduled')
           ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED`,
          [params.now, params.limit],
        );
        if (rows.length === 0) return [];
        const expired = await q<TaskRow>(
          `UPDATE tasks SET status = 'dead', completed_at = $2, updated_at = $2, error = $3, expires_at = NULL
           WHERE id = ANY($1::bigint[]) RETURNING *`,
          [rows.map((r) => r.id), params.now, JSON.stringify(params.error ?? null)],
        );
        const from = new Map(rows.map((r) => [r.id, r.status]));
        const transitions = expired.sort((a, b) => a.id - b.id).map((row) => ({ task: toTask(row), from: from.get(row.id)! }));
        // Tasks waiting on an expired one are cancelled (or run anyway) in the same transaction.
        return [...transitions, ...(await settleDependents(q, expired, params.now))];
      });
    },

    async taskNextExpiry() {
      const [row] = await query<{ at: number | null }>(
        "SELECT min(expires_at) AS at FROM tasks WHERE expires_at IS NOT NULL AND status IN ('queued', 'scheduled')",
      );
      return row.at;
    },

    async taskDependencies(params) {
      if (params.ids.length === 0) return new Map();
      return dependenciesByTask(await query<DependencyRow>('SELECT * FROM task_dependencies WHERE task_id = ANY($1::bigint[])', [params.ids]));
    },

    async taskCounts(params) {
      const namespaces = params?.namespaces;
      if (namespaces === undefined && !params?.byNamespace) {
        return query<TaskCount>('SELECT type, priority, status, sum(n)::bigint AS count FROM task_counts GROUP BY type, priority, status HAVING sum(n) > 0');
      }
      // task_counts knows a group's namespace by its req_key: a filtered count reads it by key.
      const rows = await query<TaskCount & { req_key: string }>(
        'SELECT req_key, type, priority, status, sum(n)::bigint AS count FROM task_counts GROUP BY req_key, type, priority, status HAVING sum(n) > 0',
      );
      return countsOfNamespaces(rows, namespaces, params?.byNamespace ?? false);
    },
  };

  return { store, endLeases, settleDependents };
}
