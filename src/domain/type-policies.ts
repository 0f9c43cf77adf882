/**
 * Policies per task type, pauses, and what holds a queued task back. Times are epoch milliseconds.
 * A type is its namespace's: team-a's policy, pauses, rate windows, round-robin turns and usage of
 * `summarize` are not team-b's, and hold back none of team-b's tasks.
 */

/** At most `count` tasks of the type start (are claimed) in any window of `perMs`; per concurrency key when `perKey`. */
export interface RateLimit {
  count: number;
  perMs: number;
  perKey: boolean;
}

/**
 * How a task type shares the fleet, set at runtime. A null limit is no limit. `keyWeights` gives a
 * concurrency key more turns in the round-robin (weight 2: twice as many as a key of weight 1).
 */
export interface TypePolicy {
  maxConcurrency: number | null;
  maxConcurrencyPerKey: number | null;
  rateLimit: RateLimit | null;
  keyWeights: Record<string, number>;
  /** Absent in policies stored before budgets existed: no budget. */
  budget?: Budget | null;
}

/**
 * Usage a type may spend (reported with completions and failures): tokens (in and out) in any hour,
 * cost in any day; per concurrency key when `perKey`. A spent budget holds tasks back until the window allows.
 */
export interface Budget {
  tokensPerHour: number | null;
  costPerDay: number | null;
  perKey: boolean;
}

export interface TypePolicyRecord {
  namespace: string;
  type: string;
  policy: TypePolicy;
  updatedAt: number;
}

/** A type (key null) or one concurrency key of it, paused until `until` (null: until resumed). */
export interface TypePause {
  namespace: string;
  type: string;
  key: string | null;
  until: number | null;
  reason: string | null;
  createdAt: number;
}

/** Why a queued task is not handed out although an agent could take it. */
export type HoldReason = 'paused' | 'maxConcurrency' | 'maxConcurrencyPerKey' | 'rateLimit' | 'budget';
export const HOLD_REASONS: readonly HoldReason[] = ['paused', 'maxConcurrency', 'maxConcurrencyPerKey', 'rateLimit', 'budget'];

/** Queued tasks of one (requirement set, type, priority, concurrency key), the unit a claim takes turns over. */
export interface QueuedGroup {
  reqKey: string;
  /** The namespace of the requirement key (every group of one key is one namespace's). */
  namespace: string;
  type: string;
  priority: number;
  /** '' for tasks without a concurrency key. */
  key: string;
  n: number;
}

/** Leased tasks, or starts inside a rate window, of one (namespace, type, key). */
export interface TypeKeyCount {
  namespace: string;
  type: string;
  key: string;
  count: number;
  /** Starts only: the oldest start inside the window. */
  oldest?: number;
}

/**
 * What a claim's admission reads inside its transaction: the policies, the pauses in force, the
 * leases held and the starts inside the rate windows of the types that have a policy, and the
 * round-robin's state (each key's pass and the clock).
 */
export interface AdmissionState {
  policies: TypePolicyRecord[];
  pauses: TypePause[];
  leased: TypeKeyCount[];
  starts: TypeKeyCount[];
  /** Each namespace's round-robin clock (a namespace with none starts at 0). */
  fairClocks: { namespace: string; clock: number }[];
  passes: { namespace: string; key: string; pass: number }[];
  /** Of the types with a budget: usage per key over the last hour (tokens) and day (cost), with the oldest report of each. */
  spent: SpentUsage[];
}

export interface SpentUsage {
  namespace: string;
  type: string;
  key: string;
  tokensHour: number;
  oldestHour: number | null;
  costDay: number;
  oldestDay: number | null;
}

export const HOUR_MS = 3_600_000;
export const DAY_MS = 24 * HOUR_MS;

/** What an agent reports a task used, with its completion or failure. */
export interface TaskUsage {
  inputTokens?: number;
  outputTokens?: number;
  costUsd?: number;
  model?: string;
}

/** Usage summed over a window: tokens in and out, cost, and how many reports. */
export interface UsageTotals {
  inputTokens: number;
  outputTokens: number;
  costUsd: number;
  reports: number;
}

/** A type's usage over the last hour and day, in all and per concurrency key ('' for none). */
export interface TypeUsage {
  hour: UsageTotals;
  day: UsageTotals;
  keys: { key: string; hour: UsageTotals; day: UsageTotals }[];
}

/** Usage of every type that reported any in the last day: the fleet's sums, and each type's (keys sorted by most spent). */
export interface FleetUsage {
  hour: UsageTotals;
  day: UsageTotals;
  types: (TypeUsage & { type: string })[];
}
