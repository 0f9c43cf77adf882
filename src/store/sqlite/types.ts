import { DAY_MS, HOUR_MS, type AdmissionState, type QueuedGroup } from '../../domain/type-policies.js';
import { namespaceOfKey } from '../../domain/requirements.js';
import type { ClaimPlan, TypeStore } from '../store.js';
import {
  leasedCounts,
  policedTypes,
  toCount,
  toGroup,
  toPause,
  toPolicy,
  type TypeKeyCountRow,
  type TypePauseRow,
  type TypePolicyRow,
  toFleetUsage,
  toUsage,
  type UsageRow,
  toSpent,
  type SpentRow,
} from '../type-rows.js';
import type { SqliteDatabase } from './database.js';

/** What the tasks area's claim needs of fair sharing, inside its write. */
export interface SqliteAdmission {
  /** True when a claim may take the plain path: no policy, no pause, no queued task with a key or locks. */
  plain(): boolean;
  /** What admission reads, with the round-robin passes of the keys among `groups`. */
  state(now: number, groups: QueuedGroup[]): AdmissionState;
  groups(reqKeys: string[]): QueuedGroup[];
  /** The oldest queued task among these groups (past the ids in `after`: tasks waiting for their locks), and its group. */
  head(groups: QueuedGroup[], after: Map<QueuedGroup, number>, now: number): { id: number; group: QueuedGroup } | undefined;
  /** Writes the round-robin's state and the rate limits' starts that the plan recorded. */
  record(plan: ClaimPlan, now: number): void;
}

/**
 * Queued tasks by (requirement set, type, priority, key) where `filter` holds (of req_key, type):
 * queued_groups counts the keyed ones only, so that a task without a key costs fair sharing no
 * write; the group of key '' is task_counts' queued count less the keyed ones (migration 13). One
 * row a (requirement set, type, priority), its keys and counts a JSON array of [key, n]: a row a
 * key cost more to hand to JavaScript (2 ms with 1,000 keys queued, on every claim) than the query.
 */
const queuedGroups = (filter: string) => `
  SELECT req_key, type, priority, json_group_array(json_array(ckey, n)) AS keys FROM (
    SELECT req_key, type, priority, ckey, n FROM queued_groups WHERE n > 0 AND ${filter}
    UNION ALL
    SELECT * FROM (
      SELECT c.req_key, c.type, c.priority, '' AS ckey,
        c.n - coalesce((SELECT sum(g.n) FROM queued_groups g WHERE g.req_key = c.req_key AND g.type = c.type AND g.priority = c.priority), 0) AS n
      FROM task_counts c WHERE c.status = 'queued' AND c.n > 0 AND ${filter}
    ) WHERE n > 0
  ) GROUP BY req_key, type, priority`;

interface QueuedGroupsRow {
  req_key: string;
  type: string;
  priority: number;
  /** JSON: [[key, n], …]. */
  keys: string;
}

const toGroups = (rows: QueuedGroupsRow[]): QueuedGroup[] =>
  rows.flatMap(({ req_key, type, priority, keys }) => (JSON.parse(keys) as [string, number][]).map(([ckey, n]) => toGroup({ req_key, type, priority, ckey, n })));

/** Usage reports summed per namespace, type, key and window (since @hour, since @day) where `filter` holds. */
const usageSums = (filter: string) => `
  SELECT namespace, type, ckey, 'hour' AS window, sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
    sum(cost_usd) AS cost_usd, count(*) AS reports FROM task_usage WHERE ${filter} AND at >= @hour GROUP BY namespace, type, ckey
  UNION ALL
  SELECT namespace, type, ckey, 'day', sum(input_tokens), sum(output_tokens), sum(cost_usd), count(*) FROM task_usage
    WHERE ${filter} AND at >= @day GROUP BY namespace, type, ckey`;

/**
 * Read on every claim (anyRule) and on every claim under a limit (leasedKeyed), so each names its
 * partial index: SQLite's planner, without statistics, picks tasks_by_status or tasks_by_type and
 * reads every queued task or every task of the type, done ones too. Exported for the test of their plans.
 */
export const CLAIM_READS = {
  anyRule: `SELECT EXISTS (SELECT 1 FROM type_policies) OR EXISTS (SELECT 1 FROM type_pauses)
    OR EXISTS (SELECT 1 FROM tasks INDEXED BY tasks_queued_keyed WHERE status = 'queued' AND concurrency_key <> '')
    OR EXISTS (SELECT 1 FROM tasks INDEXED BY tasks_queued_locking WHERE status = 'queued' AND locks <> '[]')`,
  // By key; the unkeyed ones are each type's leased count less those (leasedCounts).
  leasedKeyed: `SELECT namespace, type, concurrency_key AS ckey, count(*) AS n FROM tasks INDEXED BY tasks_leased_keyed
    WHERE status = 'leased' AND concurrency_key <> '' AND type = ? GROUP BY namespace, concurrency_key`,
};

/** Policies and pauses per task type (SQLite), and what the claim reads of them. */
export function sqliteTypes(d: SqliteDatabase): { store: TypeStore; admission: SqliteAdmission } {
  const { db, groupCommit } = d;
  const s = {
    anyRule: db.prepare(CLAIM_READS.anyRule).pluck(),
    policies: db.prepare('SELECT * FROM type_policies ORDER BY namespace, type'),
    policy: db.prepare('SELECT * FROM type_policies WHERE namespace = ? AND type = ?'),
    putPolicy: db.prepare(
      `INSERT INTO type_policies (namespace, type, policy, updated_at) VALUES (@namespace, @type, @policy, @now)
       ON CONFLICT (namespace, type) DO UPDATE SET policy = excluded.policy, updated_at = excluded.updated_at RETURNING *`,
    ),
    pauses: db.prepare('SELECT * FROM type_pauses WHERE until IS NULL OR until > ? ORDER BY namespace, type, ckey'),
    pause: db.prepare(
      `INSERT INTO type_pauses (namespace, type, ckey, until, reason, created_at) VALUES (@namespace, @type, @ckey, @until, @reason, @now)
       ON CONFLICT (namespace, type, ckey) DO UPDATE SET until = excluded.until, reason = excluded.reason, created_at = excluded.created_at RETURNING *`,
    ),
    resumeOne: db.prepare('DELETE FROM type_pauses WHERE namespace = ? AND type = ? AND ckey = ? RETURNING *'),
    resumeAll: db.prepare('DELETE FROM type_pauses WHERE namespace = ? AND type = ? RETURNING *'),
    // task_counts knows a namespace by its req_key.
    typeKeys: db.prepare('SELECT req_key FROM task_counts WHERE type = ? AND n > 0').pluck(),
    leasedKeyed: db.prepare(CLAIM_READS.leasedKeyed),
    leasedCounted: db.prepare("SELECT req_key, type, sum(n) AS n FROM task_counts WHERE status = 'leased' AND type = ? GROUP BY req_key"),
    pruneStarts: db.prepare('DELETE FROM type_starts WHERE namespace = ? AND type = ? AND at <= ?'),
    starts: db.prepare(
      'SELECT namespace, type, ckey, count(*) AS n, min(at) AS oldest FROM type_starts WHERE namespace = ? AND type = ? AND at > ? GROUP BY ckey',
    ),
    addStart: db.prepare('INSERT INTO type_starts (namespace, type, ckey, at) VALUES (?, ?, ?, ?)'),
    clocks: db.prepare('SELECT namespace, clock FROM fair_clocks'),
    setClock: db.prepare('INSERT INTO fair_clocks VALUES (?, ?) ON CONFLICT (namespace) DO UPDATE SET clock = excluded.clock'),
    // As the groups, one row a namespace: its keys' passes a JSON array of [key, pass].
    passes: db.prepare(
      `SELECT namespace, json_group_array(json_array(ckey, pass)) AS passes FROM fair_keys
       WHERE namespace IN (SELECT value FROM json_each(?)) AND ckey IN (SELECT value FROM json_each(?)) GROUP BY namespace`,
    ),
    setPass: db.prepare('INSERT INTO fair_keys (namespace, ckey, pass) VALUES (?, ?, ?) ON CONFLICT (namespace, ckey) DO UPDATE SET pass = excluded.pass'),
    groups: db.prepare(queuedGroups('req_key IN (SELECT value FROM json_each(@keys))')),
    allGroups: db.prepare(queuedGroups('1')),
    typeGroups: db.prepare(queuedGroups('type = @type')),
    usageInsert: db.prepare(
      `INSERT INTO task_usage (namespace, type, ckey, at, input_tokens, output_tokens, cost_usd, model)
       VALUES (@namespace, @type, @ckey, @at, @input, @output, @cost, @model)`,
    ),
    usagePrune: db.prepare('DELETE FROM task_usage WHERE namespace = ? AND type = ? AND at < ?'),
    usageSums: db.prepare(usageSums('namespace = @namespace AND type = @type')),
    usagePruneAll: db.prepare('DELETE FROM task_usage WHERE at < ?'),
    usageSumsAll: db.prepare(usageSums('1')),
    spent: db.prepare(`SELECT namespace, type, ckey, coalesce(sum(CASE WHEN at >= @hour THEN input_tokens + output_tokens END), 0) AS tokens_hour,
        min(CASE WHEN at >= @hour THEN at END) AS oldest_hour, coalesce(sum(cost_usd), 0) AS cost_day, min(at) AS oldest_day
      FROM task_usage WHERE namespace = @namespace AND type = @type AND at >= @day GROUP BY ckey`),
    head: db
      .prepare(
        // A task past its expires_at is never handed out, even before the expirer has swept it.
        "SELECT id FROM tasks WHERE status = 'queued' AND req_key = ? AND type = ? AND priority = ? AND concurrency_key = ? AND id > ? AND (expires_at IS NULL OR expires_at > ?) ORDER BY id LIMIT 1",
      )
      .pluck(),
  };

  function state(now: number, groups: QueuedGroup[]): AdmissionState {
    const policies = (s.policies.all() as TypePolicyRow[]).map(toPolicy);
    const { limited, rated, budgeted } = policedTypes(policies);
    const starts = rated.flatMap(({ namespace, type, since }) => {
      s.pruneStarts.run(namespace, type, now - since);
      return (s.starts.all(namespace, type, now - since) as TypeKeyCountRow[]).map(toCount);
    });
    const limitedTypes = [...new Set(limited.map((l) => l.type))];
    const keys = [...new Set(groups.map((g) => g.key))];
    const namespaces = [...new Set(groups.map((g) => g.namespace))];
    return {
      policies,
      pauses: (s.pauses.all(now) as TypePauseRow[]).map(toPause),
      leased: leasedCounts(
        limited,
        limitedTypes.flatMap((type) => s.leasedKeyed.all(type) as TypeKeyCountRow[]),
        limitedTypes.flatMap((type) => s.leasedCounted.all(type) as { req_key: string; type: string; n: number }[]),
      ),
      starts,
      fairClocks: s.clocks.all() as { namespace: string; clock: number }[],
      passes: (s.passes.all(JSON.stringify(namespaces), JSON.stringify(keys)) as { namespace: string; passes: string }[]).flatMap(({ namespace, passes }) =>
        (JSON.parse(passes) as [string, number][]).map(([key, pass]) => ({ namespace, key, pass })),
      ),
      spent: budgeted.flatMap(({ namespace, type }) =>
        (s.spent.all({ namespace, type, hour: now - HOUR_MS, day: now - DAY_MS }) as SpentRow[]).map(toSpent),
      ),
    };
  }

  const admission: SqliteAdmission = {
    plain: () => (s.anyRule.get() as number) === 0,
    state,
    groups: (reqKeys) => toGroups(s.groups.all({ keys: JSON.stringify(reqKeys) }) as QueuedGroupsRow[]),
    head(groups, after, now) {
      let best: { id: number; group: QueuedGroup } | undefined;
      for (const group of groups) {
        const id = s.head.get(group.reqKey, group.type, group.priority, group.key, after.get(group) ?? 0, now) as number | undefined;
        if (id !== undefined && (best === undefined || id < best.id)) best = { id, group };
      }
      return best;
    },
    record(plan, now) {
      const fair = plan.fairUpdates();
      for (const c of fair.clocks) s.setClock.run(c.namespace, c.clock);
      for (const p of fair.passes) s.setPass.run(p.namespace, p.key, p.pass);
      for (const start of plan.starts()) s.addStart.run(start.namespace, start.type, start.key, now);
    },
  };

  const store: TypeStore = {
    typePolicyPut(params) {
      const { namespace, type, policy, now } = params;
      return groupCommit.write(() => toPolicy(s.putPolicy.get({ namespace, type, policy: JSON.stringify(policy), now }) as TypePolicyRow));
    },
    async typePolicyGet(params) {
      const row = s.policy.get(params.namespace, params.type) as TypePolicyRow | undefined;
      return row && toPolicy(row);
    },
    typePause(params) {
      const { namespace, type, key, until, reason, now } = params;
      return groupCommit.write(() => toPause(s.pause.get({ namespace, type, ckey: key ?? '', until, reason, now }) as TypePauseRow));
    },
    typeResume(params) {
      const { namespace, type } = params;
      return groupCommit.write(() =>
        ((params.allKeys ? s.resumeAll.all(namespace, type) : s.resumeOne.all(namespace, type, params.key ?? '')) as TypePauseRow[]).map(toPause),
      );
    },
    async typeExists(params) {
      const { namespace, type } = params;
      return (s.typeKeys.all(type) as string[]).some((key) => namespaceOfKey(key) === namespace) || s.policy.get(namespace, type) !== undefined;
    },
    usageRecord(params) {
      const u = params.usage;
      return groupCommit.write(() => {
        s.usageInsert.run({
          namespace: params.namespace,
          type: params.type,
          ckey: params.key,
          at: params.now,
          input: u.inputTokens ?? 0,
          output: u.outputTokens ?? 0,
          cost: u.costUsd ?? 0,
          model: u.model ?? null,
        });
      });
    },
    usageSummary(params) {
      const { namespace, type } = params;
      return groupCommit.write(() => {
        s.usagePrune.run(namespace, type, params.dayFrom);
        return toUsage(s.usageSums.all({ namespace, type, hour: params.hourFrom, day: params.dayFrom }) as UsageRow[]);
      });
    },
    usageTotals(params) {
      return groupCommit.write(() => {
        s.usagePruneAll.run(params.dayFrom);
        const rows = s.usageSumsAll.all({ hour: params.hourFrom, day: params.dayFrom }) as (UsageRow & { namespace: string; type: string })[];
        return toFleetUsage(rows, params.namespaces);
      });
    },
    async typeOverview(params) {
      const groups = toGroups((params.type === undefined ? s.allGroups.all() : s.typeGroups.all({ type: params.type })) as QueuedGroupsRow[]);
      // Pruning starts is a write: the overview runs in the group commit like a claim.
      return groupCommit.write(() => ({ state: state(params.now, groups), groups }));
    },
  };
  return { store, admission };
}
