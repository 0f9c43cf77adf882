import { DAY_MS, HOUR_MS, type AdmissionState, type QueuedGroup } from '../../domain/type-policies.js';
import { namespaceOfKey } from '../../domain/requirements.js';
import type { TaskRow } from '../rows.js';
import type { ClaimPlan, TypeStore } from '../store.js';
import {
  leasedCounts,
  policedTypes,
  toCount,
  toGroup,
  toPause,
  toPolicy,
  type QueuedGroupRow,
  type TypeKeyCountRow,
  type TypePauseRow,
  type TypePolicyRow,
  toFleetUsage,
  toUsage,
  type UsageRow,
  toSpent,
  type SpentRow,
} from '../type-rows.js';
import { hotPathFunction, prepared, type PostgresDatabase, type Query } from './database.js';

/**
 * True when claims must follow a plan: some policy, some pause, or a queued task with a key or
 * locks; otherwise a claim takes the plain path. An SQL expression, asked by the claim's first
 * statement (the agents' lock), so that it costs no round trip of its own.
 */
export const PLAN_NEEDED = `(EXISTS (SELECT 1 FROM type_policies) OR EXISTS (SELECT 1 FROM type_pauses)
  OR EXISTS (SELECT 1 FROM tasks WHERE status = 'queued' AND concurrency_key <> '')
  OR EXISTS (SELECT 1 FROM tasks WHERE status = 'queued' AND locks <> '[]'))`;

/** Usage reports summed per namespace, type, key and window (since $1, since $2) where `filter` holds. */
const usageSums = (filter: string) => `
  SELECT namespace, type, ckey, 'hour' AS window, sum(input_tokens)::bigint AS input_tokens, sum(output_tokens)::bigint AS output_tokens,
    sum(cost_usd) AS cost_usd, count(*)::int AS reports FROM task_usage WHERE ${filter} AND at >= $1 GROUP BY namespace, type, ckey
  UNION ALL
  SELECT namespace, type, ckey, 'day', sum(input_tokens)::bigint, sum(output_tokens)::bigint, sum(cost_usd), count(*)::int FROM task_usage
    WHERE ${filter} AND at >= $2 GROUP BY namespace, type, ckey`;

/** What the tasks area's claim needs of fair sharing, inside its transaction. */
export interface PostgresAdmission {
  /**
   * Claims that follow a plan take turns across the cluster: the claim_lock row is locked for the
   * rest of the transaction, so that limits are counted with every other node's leases.
   */
  lock(q: Query): Promise<void>;
  groups(q: Query, capabilities: string[]): Promise<QueuedGroup[]>;
  /** What the plan reads of policies, pauses, leases and turns for these groups; and whether some queued task locks resources. */
  read(q: Query, now: number, groups: QueuedGroup[]): Promise<{ state: AdmissionState; locking: boolean }>;
  /**
   * Leases the oldest queued task without locks of each group in `taken` (a group once for each
   * task the plan took from it), all or none: the rows in `taken`'s order, or undefined when some
   * group had fewer.
   */
  leaseHeads(q: Query, taken: QueuedGroup[], agentId: string, now: number, claimId: number | null): Promise<TaskRow[] | undefined>;
  /** Leases the oldest queued task among these groups to the agent (one that locks resources only `withLocks`); its row, or undefined when none was left. */
  leaseHead(
    q: Query,
    groups: QueuedGroup[],
    agentId: string,
    now: number,
    after: Map<QueuedGroup, number>,
    claimId: number | null,
    withLocks: boolean,
  ): Promise<TaskRow | undefined>;
  record(q: Query, plan: ClaimPlan, now: number): Promise<void>;
}

/**
 * Queued tasks by (requirement set, type, priority, key) where `filter` holds (of req_key, type), in
 * one statement (one snapshot): queued_groups counts the keyed ones only, so that a task without a
 * key costs fair sharing no write; the group of key '' is task_counts' queued count less the keyed
 * ones (migration 10). Both tables are sharded: their shards are summed.
 */
const queuedGroups = (filter: string) => `
  WITH keyed AS (
    SELECT req_key, type, priority, ckey, sum(n)::bigint AS n FROM queued_groups WHERE ${filter} GROUP BY req_key, type, priority, ckey
  ), counted AS (
    SELECT req_key, type, priority, sum(n)::bigint AS n FROM task_counts WHERE status = 'queued' AND ${filter} GROUP BY req_key, type, priority
  )
  SELECT * FROM (
    SELECT req_key, type, priority, ckey, n FROM keyed
    UNION ALL
    SELECT c.req_key, c.type, c.priority, '', c.n - coalesce((SELECT sum(k.n) FROM keyed k
      WHERE k.req_key = c.req_key AND k.type = c.type AND k.priority = c.priority), 0)::bigint FROM counted c
  ) g WHERE n > 0`;

/**
 * The groups a claim plans over: queuedGroups of the requirement sets the claiming agent meets, as a
 * function whose GROUP BY is hashed. The planner cannot estimate that filter (an array containment),
 * takes it to keep 1 % of the rows, and sorted them to group them: with 1,000 keys queued, 2,050
 * rows of the shards sorted in 2.0 ms of the statement's 3.4 (hashed, 1.5 ms), inside the
 * transaction every planned claim waits for. PL/pgSQL, so that each connection plans it once.
 */
export const PLAN_GROUPS_FUNCTION = hotPathFunction(
  'fleetd_plan_groups',
  (name) => `CREATE OR REPLACE FUNCTION ${name}(capabilities text[])
  RETURNS TABLE (req_key text, type text, priority integer, ckey text, n bigint) LANGUAGE plpgsql STABLE SET enable_sort = off AS $groups$
#variable_conflict use_column
BEGIN
  RETURN QUERY ${queuedGroups("string_to_array(req_key, E'\\n') <@ capabilities")};
END $groups$`,
);

/**
 * Each group's oldest queued tasks, locked, none past its expiry: the groups unnested as g from
 * $1..$4 (requirement set, type, priority, key) and $7 (`column`, one number a group), $6 now.
 */
const groupHeads = (column: 'after' | 'n', where: string, limit: string) => `
  SELECT h.id FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $7::bigint[]) AS g(req_key, type, priority, ckey, ${column})
  CROSS JOIN LATERAL (
    SELECT id FROM tasks WHERE status = 'queued' AND req_key = g.req_key AND type = g.type AND priority = g.priority
      AND concurrency_key = g.ckey${where} AND (expires_at IS NULL OR expires_at > $6) ORDER BY id LIMIT ${limit} FOR UPDATE SKIP LOCKED
  ) h`;

/** Groups as groupHeads' $1..$4. */
const groupColumns = (groups: QueuedGroup[]) => [groups.map((g) => g.reqKey), groups.map((g) => g.type), groups.map((g) => g.priority), groups.map((g) => g.key)];

/** As the plain claim's lease ($5 agent, $6 now, $8 the claim's id): never past the attempt's execution timeout (least() skips a NULL). */
const LEASE = `UPDATE tasks t SET status = 'leased', agent_id = $5, attempts = t.attempts + 1, claim_id = $8, claimed_at = $6, updated_at = $6,
  lease_expires_at = $6 + least(t.lease_ms, t.execution_timeout_ms), expires_at = NULL`;

/**
 * Leases the oldest head among the groups, each past the id in $7 (tasks waiting for their locks);
 * one that locks resources only when $9, the claim ready to take its locks (a savepoint before it).
 */
const LEASE_HEAD = prepared(
  'lease_head',
  `WITH head AS (${groupHeads('after', " AND id > g.after AND ($9 OR locks = '[]')", '1')} ORDER BY h.id LIMIT 1)
   ${LEASE} WHERE t.id = (SELECT id FROM head) RETURNING t.*`,
);

/**
 * Leases, for each group, as many of its oldest queued tasks as the plan took from it ($7), all of
 * them or none. A group may hold fewer than the plan counted: tasks past their expires_at not yet
 * swept, rows another transaction holds, or a task that locks resources, queued again since the
 * claim looked (a retry, a scheduled task come due), which this statement never takes since it
 * cannot take the locks. Then it leases nothing, and the claim starts its plan again, a task at a time.
 */
const LEASE_HEADS = prepared(
  'lease_heads',
  `WITH heads AS (${groupHeads('n', " AND locks = '[]'", 'g.n')})
   ${LEASE} WHERE t.id IN (SELECT id FROM heads)
     AND (SELECT count(DISTINCT id) FROM heads) = (SELECT sum(n) FROM unnest($7::bigint[]) AS c(n)) RETURNING t.*`,
);

/**
 * What a claim under a plan reads and writes, each a named statement: unnamed, PostgreSQL parsed
 * and planned each on every claim, inside the transaction every planned claim waits for (the queued
 * groups: 0.7–3.8 ms of planning in EXPLAIN ANALYZE with 1,000 keys queued; prepared, 0.01 ms).
 */
const PLAN = {
  groups: prepared('plan_groups', `SELECT * FROM ${PLAN_GROUPS_FUNCTION.name}($1::text[])`),
  /**
   * In one statement, what a plan reads whatever the policies say ($1 now; $2 and $3 the groups'
   * namespaces and keys): the policies, pauses, turns, and whether a queued task locks resources.
   * Five statements had been five round trips inside the transaction every planned claim waits for.
   */
  state: prepared(
    'plan_state',
    `SELECT
       (SELECT coalesce(json_agg(p ORDER BY p.namespace, p.type), '[]') FROM type_policies p) AS policies,
       (SELECT coalesce(json_agg(p ORDER BY p.namespace, p.type, p.ckey), '[]') FROM type_pauses p WHERE p.until IS NULL OR p.until > $1) AS pauses,
       (SELECT coalesce(json_agg(c), '[]') FROM fair_clocks c) AS clocks,
       (SELECT coalesce(json_agg(f), '[]') FROM (
          SELECT namespace, ckey AS key, pass FROM fair_keys WHERE namespace = ANY($2::text[]) AND ckey IN (SELECT unnest($3::text[]))) f) AS passes,
       EXISTS (SELECT 1 FROM tasks WHERE status = 'queued' AND locks <> '[]') AS locking`,
  ),
  /**
   * The leases of the limited types ($1), when some policy limits concurrency, in one statement: by
   * key from the partial index of keyed leases; the unkeyed ones are each type's leased count less
   * those (leasedCounts).
   */
  leased: prepared(
    'plan_leased',
    `SELECT
       (SELECT coalesce(json_agg(k), '[]') FROM (
          SELECT namespace, type, concurrency_key AS ckey, count(*) AS n FROM tasks
          WHERE status = 'leased' AND concurrency_key <> '' AND type = ANY($1::text[]) GROUP BY namespace, type, concurrency_key) k) AS keyed,
       (SELECT coalesce(json_agg(c), '[]') FROM (
          SELECT req_key, type, sum(n) AS n FROM task_counts WHERE status = 'leased' AND type = ANY($1::text[]) GROUP BY req_key, type) c) AS counted`,
  ),
  pruneStarts: prepared('plan_prune_starts', 'DELETE FROM type_starts WHERE namespace = $1 AND type = $2 AND at <= $3'),
  starts: prepared(
    'plan_starts',
    'SELECT namespace, type, ckey, count(*) AS n, min(at) AS oldest FROM type_starts WHERE namespace = $1 AND type = $2 AND at > $3 GROUP BY namespace, type, ckey',
  ),
  spent: prepared(
    'plan_spent',
    `SELECT namespace, type, ckey, coalesce(sum(CASE WHEN at >= $3 THEN input_tokens + output_tokens END), 0) AS tokens_hour,
       min(CASE WHEN at >= $3 THEN at END) AS oldest_hour, coalesce(sum(cost_usd), 0) AS cost_day, min(at) AS oldest_day
     FROM task_usage WHERE (namespace, type) IN (SELECT * FROM unnest($1::text[], $2::text[])) AND at >= $4
     GROUP BY namespace, type, ckey`,
  ),
  lock: prepared('plan_lock', 'SELECT 1 FROM claim_lock WHERE id = 1 FOR UPDATE'),
  /**
   * What the plan recorded, in one statement: the namespaces' clocks ($1, $2), the keys' passes ($3
   * to $5) and the rate limits' starts ($6 to $8, at $9), each an empty list when there is none.
   */
  record: prepared(
    'plan_record',
    `WITH clocks AS (
       INSERT INTO fair_clocks SELECT * FROM unnest($1::text[], $2::float8[]) ORDER BY 1
       ON CONFLICT (namespace) DO UPDATE SET clock = EXCLUDED.clock
     ), passes AS (
       INSERT INTO fair_keys (namespace, ckey, pass) SELECT * FROM unnest($3::text[], $4::text[], $5::float8[]) ORDER BY 1, 2
       ON CONFLICT (namespace, ckey) DO UPDATE SET pass = EXCLUDED.pass
     )
     INSERT INTO type_starts (namespace, type, ckey, at) SELECT n, t, k, $9 FROM unnest($6::text[], $7::text[], $8::text[]) AS s(n, t, k)`,
  ),
};

/** PLAN.state's row: its lists as JSON, rows as objects of their columns. */
interface PlanStateRow {
  policies: TypePolicyRow[];
  pauses: TypePauseRow[];
  clocks: { namespace: string; clock: number }[];
  passes: { namespace: string; key: string; pass: number }[];
  locking: boolean;
}

/** Whether a task's row is of this group. */
export const inGroup = (row: TaskRow, g: QueuedGroup) => g.reqKey === row.req_key && g.type === row.type && g.priority === row.priority && g.key === row.concurrency_key;

/** Policies and pauses per task type (PostgreSQL), and what the claim reads of them. */
export function postgresTypes(db: PostgresDatabase): { store: TypeStore; admission: PostgresAdmission } {
  const query: Query = (text, values) => db.query(text, values);

  async function read(q: Query, now: number, groups: QueuedGroup[]): Promise<{ state: AdmissionState; locking: boolean }> {
    const keys = [...new Set(groups.map((g) => g.key))];
    const namespaces = [...new Set(groups.map((g) => g.namespace))];
    const [row] = await q<PlanStateRow>(PLAN.state, [now, namespaces, keys]);
    const policies = row.policies.map(toPolicy);
    const { limited, rated, budgeted } = policedTypes(policies);
    const starts = [];
    for (const { namespace, type, since } of rated) {
      await q(PLAN.pruneStarts, [namespace, type, now - since]);
      const rows = await q<TypeKeyCountRow>(PLAN.starts, [namespace, type, now - since]);
      starts.push(...rows.map(toCount));
    }
    const [leased] =
      limited.length === 0
        ? [{ keyed: [], counted: [] }]
        : await q<{ keyed: TypeKeyCountRow[]; counted: { req_key: string; type: string; n: number }[] }>(PLAN.leased, [[...new Set(limited.map((l) => l.type))]]);
    return {
      locking: row.locking,
      state: {
        policies,
        pauses: row.pauses.map(toPause),
        leased: leasedCounts(limited, leased.keyed, leased.counted),
        starts,
        fairClocks: row.clocks,
        passes: row.passes,
        spent:
          budgeted.length === 0
            ? []
            : (await q<SpentRow>(PLAN.spent, [budgeted.map((b) => b.namespace), budgeted.map((b) => b.type), now - HOUR_MS, now - DAY_MS])).map(toSpent),
      },
    };
  }

  const admission: PostgresAdmission = {
    async lock(q) {
      await q(PLAN.lock);
    },
    async groups(q, capabilities) {
      const rows = await q<QueuedGroupRow>(PLAN.groups, [capabilities]);
      return rows.map(toGroup);
    },
    read,
    async leaseHead(q, groups, agentId, now, after, claimId, withLocks) {
      const [row] = await q<TaskRow>(LEASE_HEAD, [...groupColumns(groups), agentId, now, groups.map((g) => after.get(g) ?? 0), claimId, withLocks]);
      return row;
    },
    async leaseHeads(q, taken, agentId, now, claimId) {
      const counts = new Map<QueuedGroup, number>();
      for (const g of taken) counts.set(g, (counts.get(g) ?? 0) + 1);
      const groups = [...counts.keys()];
      const rows = await q<TaskRow>(LEASE_HEADS, [
        ...groupColumns(groups),
        agentId,
        now,
        groups.map((g) => counts.get(g)!),
        claimId,
      ]);
      if (rows.length === 0) return undefined;
      // The statement leases all or none: a part would be tasks leased that no one is told of.
      if (rows.length !== taken.length) throw new Error(`a planned claim leased ${rows.length} tasks of ${taken.length}`);
      // Each group's tasks oldest first, handed out in the order the plan took them.
      const left = rows.sort((a, b) => a.id - b.id);
      return taken.map((g) => left.splice(left.findIndex((row) => inGroup(row, g)), 1)[0]);
    },
    async record(q, plan, now) {
      const { clocks, passes } = plan.fairUpdates();
      const starts = plan.starts();
      if (clocks.length === 0 && passes.length === 0 && starts.length === 0) return;
      await q(PLAN.record, [
        clocks.map((c) => c.namespace),
        clocks.map((c) => c.clock),
        passes.map((p) => p.namespace),
        passes.map((p) => p.key),
        passes.map((p) => p.pass),
        starts.map((s) => s.namespace),
        starts.map((s) => s.type),
        starts.map((s) => s.key),
        now,
      ]);
    },
  };

  const store: TypeStore = {
    async typePolicyPut(params) {
      const [row] = await query<TypePolicyRow>(
        `INSERT INTO type_policies (namespace, type, policy, updated_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (namespace, type) DO UPDATE SET policy = EXCLUDED.policy, updated_at = EXCLUDED.updated_at RETURNING *`,
        [params.namespace, params.type, JSON.stringify(params.policy), params.now],
      );
      return toPolicy(row);
    },
    async typePolicyGet(params) {
      const [row] = await query<TypePolicyRow>('SELECT * FROM type_policies WHERE namespace = $1 AND type = $2', [params.namespace, params.type]);
      return row && toPolicy(row);
    },
    async typePause(params) {
      const [row] = await query<TypePauseRow>(
        `INSERT INTO type_pauses (namespace, type, ckey, until, reason, created_at) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (namespace, type, ckey) DO UPDATE SET until = EXCLUDED.until, reason = EXCLUDED.reason, created_at = EXCLUDED.created_at RETURNING *`,
        [params.namespace, params.type, params.key ?? '', params.until, params.reason, params.now],
      );
      return toPause(row);
    },
    async typeResume(params) {
      const { namespace, type } = params;
      const rows = params.allKeys
        ? await query<TypePauseRow>('DELETE FROM type_pauses WHERE namespace = $1 AND type = $2 RETURNING *', [namespace, type])
        : await query<TypePauseRow>('DELETE FROM type_pauses WHERE namespace = $1 AND type = $2 AND ckey = $3 RETURNING *', [namespace, type, params.key ?? '']);
      return rows.map(toPause);
    },
    async typeExists(params) {
      const { namespace, type } = params;
      // task_counts knows a namespace by its req_key.
      const keys = await query<{ req_key: string }>('SELECT req_key FROM task_counts WHERE type = $1 GROUP BY req_key HAVING sum(n) > 0', [type]);
      if (keys.some((k) => namespaceOfKey(k.req_key) === namespace)) return true;
      return (await query('SELECT 1 FROM type_policies WHERE namespace = $1 AND type = $2', [namespace, type])).length > 0;
    },
    async usageRecord(params) {
      const u = params.usage;
      await query('INSERT INTO task_usage (namespace, type, ckey, at, input_tokens, output_tokens, cost_usd, model) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)', [
        params.namespace,
        params.type,
        params.key,
        params.now,
        u.inputTokens ?? 0,
        u.outputTokens ?? 0,
        u.costUsd ?? 0,
        u.model ?? null,
      ]);
    },
    async usageSummary(params) {
      const { namespace, type } = params;
      await query('DELETE FROM task_usage WHERE namespace = $1 AND type = $2 AND at < $3', [namespace, type, params.dayFrom]);
      const rows = await query<UsageRow>(usageSums('namespace = $3 AND type = $4'), [params.hourFrom, params.dayFrom, namespace, type]);
      return toUsage(rows);
    },
    async usageTotals(params) {
      await query('DELETE FROM task_usage WHERE at < $1', [params.dayFrom]);
      const rows = await query<UsageRow & { namespace: string; type: string }>(usageSums('true'), [params.hourFrom, params.dayFrom]);
      return toFleetUsage(rows, params.namespaces);
    },
    typeOverview(params) {
      return db.transaction(async (q) => {
        const rows = await q<QueuedGroupRow>(
          queuedGroups(params.type === undefined ? 'true' : 'type = $1'),
          params.type === undefined ? [] : [params.type],
        );
        const groups = rows.map(toGroup);
        return { state: (await read(q, params.now, groups)).state, groups };
      });
    },
  };
  return { store, admission };
}
