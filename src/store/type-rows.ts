import { namespaceVisible, type NamespaceFilter } from '../domain/namespaces.js';
import { namespaceOfKey } from '../domain/requirements.js';
import type { FleetUsage, QueuedGroup, SpentUsage, TypeKeyCount, TypePause, TypePolicyRecord, TypeUsage, UsageTotals } from '../domain/type-policies.js';

/** Rows of the fair-sharing tables both SQL drivers share, and their mapping to the domain. */

export interface TypePolicyRow {
  namespace: string;
  type: string;
  policy: string;
  updated_at: number;
}

export interface TypePauseRow {
  namespace: string;
  type: string;
  ckey: string;
  until: number | null;
  reason: string | null;
  created_at: number;
}

export interface QueuedGroupRow {
  req_key: string;
  type: string;
  priority: number;
  ckey: string;
  n: number;
}

export interface TypeKeyCountRow {
  namespace: string;
  type: string;
  ckey: string;
  n: number;
  oldest?: number;
}

export const toPolicy = (row: TypePolicyRow): TypePolicyRecord => ({
  namespace: row.namespace,
  type: row.type,
  policy: JSON.parse(row.policy),
  updatedAt: Number(row.updated_at),
});

export const toPause = (row: TypePauseRow): TypePause => ({
  namespace: row.namespace,
  type: row.type,
  key: row.ckey === '' ? null : row.ckey,
  until: row.until,
  reason: row.reason,
  createdAt: row.created_at,
});

export const toGroup = (row: QueuedGroupRow): QueuedGroup => ({
  reqKey: row.req_key,
  namespace: namespaceOfKey(row.req_key),
  type: row.type,
  priority: row.priority,
  key: row.ckey,
  n: Number(row.n),
});

export const toCount = (row: TypeKeyCountRow): TypeKeyCount => ({
  namespace: row.namespace,
  type: row.type,
  key: row.ckey,
  count: Number(row.n),
  ...(row.oldest === undefined ? {} : { oldest: Number(row.oldest) }),
});

/**
 * The types whose leases, starts and usage admission must count: those (of a namespace) with a
 * concurrency limit, a rate limit (and its window), a budget.
 */
export function policedTypes(policies: TypePolicyRecord[]): {
  limited: { namespace: string; type: string }[];
  rated: { namespace: string; type: string; since: number }[];
  budgeted: { namespace: string; type: string }[];
} {
  const of = (p: TypePolicyRecord) => ({ namespace: p.namespace, type: p.type });
  return {
    budgeted: policies.filter((p) => p.policy.budget).map(of),
    limited: policies.filter((p) => p.policy.maxConcurrency !== null || p.policy.maxConcurrencyPerKey !== null).map(of),
    rated: policies.filter((p) => p.policy.rateLimit !== null).map((p) => ({ ...of(p), since: p.policy.rateLimit!.perMs })),
  };
}

/**
 * Leased tasks of the limited types by (namespace, type, key), from the keyed leases (read by key
 * from the tasks' partial index) and the leased counts by requirement key (task_counts, which
 * knows a namespace by its req_key): a type's unkeyed leases are its count less its keyed ones.
 */
export function leasedCounts(
  limited: { namespace: string; type: string }[],
  keyed: TypeKeyCountRow[],
  counted: { req_key: string; type: string; n: number | string }[],
): TypeKeyCount[] {
  const wanted = new Set(limited.map((l) => `${l.namespace}\u0000${l.type}`));
  const unkeyed = new Map<string, TypeKeyCount>();
  for (const row of counted) {
    const namespace = namespaceOfKey(row.req_key);
    const id = `${namespace}\u0000${row.type}`;
    if (!wanted.has(id)) continue;
    const c = unkeyed.get(id);
    if (c) c.count += Number(row.n);
    else unkeyed.set(id, { namespace, type: row.type, key: '', count: Number(row.n) });
  }
  const out: TypeKeyCount[] = [];
  for (const row of keyed) {
    const id = `${row.namespace}\u0000${row.type}`;
    if (!wanted.has(id)) continue;
    const count = toCount(row);
    out.push(count);
    const c = unkeyed.get(id);
    if (c) c.count -= count.count;
  }
  for (const c of unkeyed.values()) if (c.count > 0) out.push(c);
  return out;
}


export interface UsageRow {
  ckey: string;
  window: 'hour' | 'day';
  input_tokens: number;
  output_tokens: number;
  cost_usd: number;
  reports: number;
}

const zeroUsage = (): UsageTotals => ({ inputTokens: 0, outputTokens: 0, costUsd: 0, reports: 0 });

/** Sums per key and window (rows of both windows, key by key) as a type's usage. */
export function toUsage(rows: UsageRow[]): TypeUsage {
  const usage: TypeUsage = { hour: zeroUsage(), day: zeroUsage(), keys: [] };
  const byKey = new Map<string, { key: string; hour: UsageTotals; day: UsageTotals }>();
  for (const row of rows) {
    let k = byKey.get(row.ckey);
    if (!k) byKey.set(row.ckey, (k = { key: row.ckey, hour: zeroUsage(), day: zeroUsage() }));
    // A key's rows of several namespaces (a reader of several) add up.
    const totals = { inputTokens: Number(row.input_tokens), outputTokens: Number(row.output_tokens), costUsd: Number(row.cost_usd), reports: Number(row.reports) };
    for (const field of ['inputTokens', 'outputTokens', 'costUsd', 'reports'] as const) {
      k[row.window][field] += totals[field];
      usage[row.window][field] += totals[field];
    }
  }
  usage.keys = [...byKey.values()].sort((a, b) => b.day.costUsd - a.day.costUsd || b.day.inputTokens + b.day.outputTokens - (a.day.inputTokens + a.day.outputTokens));
  return usage;
}

export interface SpentRow {
  namespace: string;
  type: string;
  ckey: string;
  tokens_hour: number;
  oldest_hour: number | null;
  cost_day: number;
  oldest_day: number | null;
}

export const toSpent = (row: SpentRow): SpentUsage => ({
  namespace: row.namespace,
  type: row.type,
  key: row.ckey,
  tokensHour: Number(row.tokens_hour),
  oldestHour: row.oldest_hour === null ? null : Number(row.oldest_hour),
  costDay: Number(row.cost_day),
  oldestDay: row.oldest_day === null ? null : Number(row.oldest_day),
});

/**
 * Sums per namespace, type, key and window (rows of every type) as the usage of the namespaces
 * (all when undefined): each type's, over those namespaces, as toUsage says, and their sums.
 */
export function toFleetUsage(rows: (UsageRow & { namespace: string; type: string })[], namespaces?: NamespaceFilter): FleetUsage {
  const byType = new Map<string, UsageRow[]>();
  for (const row of rows) {
    if (!namespaceVisible(namespaces, row.namespace)) continue;
    let list = byType.get(row.type);
    if (!list) byType.set(row.type, (list = []));
    list.push(row);
  }
  const fleet: FleetUsage = { hour: zeroUsage(), day: zeroUsage(), types: [] };
  for (const [type, typeRows] of byType) {
    const usage = toUsage(typeRows);
    fleet.types.push({ type, ...usage });
    for (const window of ['hour', 'day'] as const) {
      for (const field of ['inputTokens', 'outputTokens', 'costUsd', 'reports'] as const) fleet[window][field] += usage[window][field];
    }
  }
  fleet.types.sort((a, b) => a.type.localeCompare(b.type));
  return fleet;
}
