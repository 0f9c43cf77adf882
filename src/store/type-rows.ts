import type { FleetUsage, QueuedGroup, SpentUsage, TypeKeyCount, TypePause, TypePolicyRecord, TypeUsage, UsageTotals } from '../domain/type-policies.js';

/** Rows of the fair-sharing tables both SQL drivers share, and their mapping to the domain. */

export interface TypePolicyRow {
  type: string;
  policy: string;
  updated_at: number;
}

export interface TypePauseRow {
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
  type: string;
  ckey: string;
  n: number;
  oldest?: number;
}

export const toPolicy = (row: TypePolicyRow): TypePolicyRecord => ({ type: row.type, policy: JSON.parse(row.policy), updatedAt: row.updated_at });

export const toPause = (row: TypePauseRow): TypePause => ({
  type: row.type,
  key: row.ckey === '' ? null : row.ckey,
  until: row.until,
  reason: row.reason,
  createdAt: row.created_at,
});

export const toGroup = (row: QueuedGroupRow): QueuedGroup => ({ reqKey: row.req_key, type: row.type, priority: row.priority, key: row.ckey, n: Number(row.n) });

export const toCount = (row: TypeKeyCountRow): TypeKeyCount => ({
  type: row.type,
  key: row.ckey,
  count: Number(row.n),
  ...(row.oldest === undefined ? {} : { oldest: Number(row.oldest) }),
});

/** The types whose leases and starts admission must count: those with a policy, and with a rate limit. */
export function policedTypes(policies: TypePolicyRecord[]): { limited: string[]; rated: { type: string; since: number }[]; budgeted: string[] } {
  return {
    budgeted: policies.filter((p) => p.policy.budget).map((p) => p.type),
    limited: policies.filter((p) => p.policy.maxConcurrency !== null || p.policy.maxConcurrencyPerKey !== null).map((p) => p.type),
    rated: policies.filter((p) => p.policy.rateLimit !== null).map((p) => ({ type: p.type, since: p.policy.rateLimit!.perMs })),
  };
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
    const totals = { inputTokens: Number(row.input_tokens), outputTokens: Number(row.output_tokens), costUsd: Number(row.cost_usd), reports: Number(row.reports) };
    k[row.window] = totals;
    for (const field of ['inputTokens', 'outputTokens', 'costUsd', 'reports'] as const) usage[row.window][field] += totals[field];
  }
  usage.keys = [...byKey.values()].sort((a, b) => b.day.costUsd - a.day.costUsd || b.day.inputTokens + b.day.outputTokens - (a.day.inputTokens + a.day.outputTokens));
  return usage;
}

export interface SpentRow {
  type: string;
  ckey: string;
  tokens_hour: number;
  oldest_hour: number | null;
  cost_day: number;
  oldest_day: number | null;
}

export const toSpent = (row: SpentRow): SpentUsage => ({
  type: row.type,
  key: row.ckey,
  tokensHour: Number(row.tokens_hour),
  oldestHour: row.oldest_hour === null ? null : Number(row.oldest_hour),
  costDay: Number(row.cost_day),
  oldestDay: row.oldest_day === null ? null : Number(row.oldest_day),
});

/** Sums per type, key and window (rows of every type) as the fleet's usage: each type's as toUsage says, and their sums. */
export function toFleetUsage(rows: (UsageRow & { type: string })[]): FleetUsage {
  const byType = new Map<string, UsageRow[]>();
  for (const row of rows) {
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
