import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import type { Store } from '../store/store.js';
import { steadyNow } from './clock.js';
import type { AgentStatus, TaskStatus } from '../domain/types.js';
import { AGENT_STATUSES, TASK_STATUSES } from '../domain/types.js';
import { DAY_MS, HOUR_MS, type FleetUsage } from '../domain/type-policies.js';
import type { NamespaceFilter } from '../domain/namespaces.js';

/** How long a read of the usage sums is reused (this node's own reports drop it at once). */
export const USAGE_MEMO_MS = 5_000;
/** Reaches whose usage is kept at once (see StatsService.usage). */
const USAGE_MEMO_REACHES = 64;
/** The keys each type lists in /v1/stats and /metrics: those that spent most over the day. */
export const USAGE_KEYS_LISTED = 20;

/**
 * Latency percentiles over a sliding window, in fixed log-spaced buckets (about 4 % apart), so that
 * recording is O(1) and a percentile is O(buckets) whatever the traffic. The window is kept as one
 * bucket array per slice of time; old slices are dropped whole.
 */
export class SlidingHistogram {
  private static readonly BUCKETS = 512;
  private static readonly GROWTH = Math.log(1.04);
  private readonly slices: { start: number; counts: Uint32Array; n: number }[] = [];

  constructor(
    private readonly windowMs: number,
    private readonly sliceMs: number,
    private readonly now: () => number = steadyNow,
  ) {}

  record(valueMs: number): void {
    const t = this.now();
    let slice = this.slices[this.slices.length - 1];
    if (!slice || t - slice.start >= this.sliceMs) {
      slice = { start: t - (t % this.sliceMs), counts: new Uint32Array(SlidingHistogram.BUCKETS), n: 0 };
      this.slices.push(slice);
    }
    this.prune(t);
    const v = Math.max(valueMs, 0);
    const bucket = v < 1 ? 0 : Math.min(SlidingHistogram.BUCKETS - 1, 1 + Math.floor(Math.log(v) / SlidingHistogram.GROWTH));
    slice.counts[bucket]++;
    slice.n++;
  }

  private prune(t: number): void {
    while (this.slices.length > 0 && t - this.slices[0].start >= this.windowMs) this.slices.shift();
  }

  /** The given percentiles in ms (upper bound of the bucket), or null with no samples in the window. */
  percentiles(ps: number[]): { count: number; values: (number | null)[] } {
    this.prune(this.now());
    const total = new Float64Array(SlidingHistogram.BUCKETS);
    let count = 0;
    for (const s of this.slices) {
      count += s.n;
      for (let i = 0; i < total.length; i++) total[i] += s.counts[i];
    }
    const values = ps.map((p) => {
      if (count === 0) return null;
      const rank = Math.ceil((p / 100) * count);
      let seen = 0;
      for (let i = 0; i < total.length; i++) {
        seen += total[i];
        if (seen >= rank) return i === 0 ? 1 : Math.round(Math.exp(i * SlidingHistogram.GROWTH) * 100) / 100;
      }
      return null;
    });
    return { count, values };
  }
}

/** Events per second over the last N seconds, from a ring of one-second counters. */
export class RateWindow {
  private readonly counts: Float64Array;
  private readonly seconds: Float64Array;

  constructor(private readonly spanSeconds: number, private readonly now: () => number = steadyNow) {
    this.counts = new Float64Array(spanSeconds);
    this.seconds = new Float64Array(spanSeconds).fill(-1);
  }

  add(n = 1): void {
    const sec = Math.floor(this.now() / 1000);
    const i = sec % this.spanSeconds;
    if (this.seconds[i] !== sec) {
      this.seconds[i] = sec;
      this.counts[i] = 0;
    }
    this.counts[i] += n;
  }

  /** Mean rate over the last `seconds` whole seconds (the current, partial second excluded). */
  perSecond(seconds: number): number {
    const current = Math.floor(this.now() / 1000);
    let sum = 0;
    for (let k = 1; k <= seconds; k++) {
      const sec = current - k;
      const i = ((sec % this.spanSeconds) + this.spanSeconds) % this.spanSeconds;
      if (this.seconds[i] === sec) sum += this.counts[i];
    }
    return Math.round((sum / seconds) * 100) / 100;
  }
}

/**
 * The event-loop delay monitors' sampling interval, this one's and the Prometheus metrics'
 * (`nodejs_eventloop_lag_*`): each records the whole interval, so an idle loop reads this much.
 */
export const LOOP_RESOLUTION_MS = 10;

export interface FleetStats {
  tasks: {
    byStatus: Record<TaskStatus, number>;
    byType: Record<string, Partial<Record<TaskStatus, number>>>;
    /** Queued (claimable) tasks by priority. */
    queueDepthByPriority: Record<string, number>;
  };
  agents: { byStatus: Record<AgentStatus, number> };
  throughput: {
    completedPerSecond1m: number;
    completedPerSecond5m: number;
    failedPerSecond1m: number;
    failedPerSecond5m: number;
  };
  /** From claim to completion, over the last 5 minutes. */
  latencyMs: { count: number; p50: number | null; p95: number | null; p99: number | null };
  eventLoop: { lagP50Ms: number; lagP99Ms: number; lagMaxMs: number };
  uptimeSeconds: number;
  /** Tokens and cost agents reported over the last hour and day, in all and per type (each with its top keys, null for tasks without one). */
  usage: FleetUsageView;
}

/** The fleet's usage as /v1/stats shows it: a type's keys as GET /v1/types/:type shows them (null: no key). */
export type FleetUsageView = Omit<FleetUsage, 'types'> & {
  types: (Omit<FleetUsage['types'][number], 'keys'> & { keys: (Omit<FleetUsage['types'][number]['keys'][number], 'key'> & { key: string | null })[] })[];
};

/**
 * /v1/stats: the counts come from counters the store keeps on every write (never a scan of tasks);
 * rates and latencies from events; event-loop lag from Node's own delay monitor.
 */
export class StatsService {
  private readonly completions = new RateWindow(301);
  private readonly failures = new RateWindow(301);
  private readonly latency = new SlidingHistogram(300_000, 10_000);
  private readonly loopDelay: IntervalHistogram;
  private readonly startedAt = performance.now();
  /** The usage read last for each reach (namespaces joined; '*' for all). */
  private readonly usageMemo = new Map<string, { at: number; usage: Promise<FleetUsageView> }>();

  constructor(private readonly store: Store, private readonly now: () => number = steadyNow) {
    this.loopDelay = monitorEventLoopDelay({ resolution: LOOP_RESOLUTION_MS });
  }

  start(): void {
    this.loopDelay.enable();
  }

  stop(): void {
    this.loopDelay.disable();
  }

  recordCompletion(claimedAt: number | null, completedAt: number | null): void {
    this.completions.add();
    if (claimedAt !== null && completedAt !== null) this.latency.record(completedAt - claimedAt);
  }

  recordFailure(): void {
    this.failures.add();
  }

  /** The usage sums changed here (a report was recorded): the next read goes to the store. */
  usageRecorded(): void {
    this.usageMemo.clear();
  }

  /**
   * Every type's usage in the namespaces (all when undefined) over the last hour and day, summed
   * over them by type, each type listing the USAGE_KEYS_LISTED keys that spent most. A read is
   * reused for USAGE_MEMO_MS (other nodes' reports show within that), so that polling /v1/stats and
   * scraping /metrics sum the day's reports at most once per period and reach.
   */
  usage(namespaces?: NamespaceFilter): Promise<FleetUsageView> {
    const now = this.now();
    const reach = namespaces === undefined ? '*' : [...namespaces].sort().join(',');
    const memo = this.usageMemo.get(reach);
    if (memo && now - memo.at < USAGE_MEMO_MS && now >= memo.at) return memo.usage;
    const usage = this.store.usageTotals({ namespaces, hourFrom: now - HOUR_MS, dayFrom: now - DAY_MS }).then((u) => ({
      ...u,
      types: u.types.map((t) => ({ ...t, keys: t.keys.slice(0, USAGE_KEYS_LISTED).map((k) => ({ ...k, key: k.key === '' ? null : k.key })) })),
    }));
    // Reaches are few (one per key's namespaces); a bound all the same.
    if (this.usageMemo.size >= USAGE_MEMO_REACHES) this.usageMemo.clear();
    this.usageMemo.set(reach, { at: now, usage });
    // A failed read is not reused.
    usage.catch(() => {
      if (this.usageMemo.get(reach)?.usage === usage) this.usageMemo.delete(reach);
    });
    return usage;
  }

  eventLoopLag(): { lagP50Ms: number; lagP99Ms: number; lagMaxMs: number } {
    // The monitor samples every RESOLUTION_MS and records the whole interval; lag is what exceeds it.
    const ms = (ns: number) => Math.max(0, Math.round((ns / 1e6 - LOOP_RESOLUTION_MS) * 100) / 100);
    const h = this.loopDelay;
    const lag = h.count === 0
      ? { lagP50Ms: 0, lagP99Ms: 0, lagMaxMs: 0 }
      : { lagP50Ms: ms(h.percentile(50)), lagP99Ms: ms(h.percentile(99)), lagMaxMs: ms(h.max) };
    // Each read covers the time since the previous one, so lag reflects now, not since start-up.
    h.reset();
    return lag;
  }

  /**
   * The fleet's numbers; the task and agent counts and the usage of the namespaces of the filter only
   * (all when undefined). Throughput and latency, whatever the filter, are of the completions and
   * failures this node hears of: in a cluster, every node's, which its bus relays (a dashboard reads
   * one node); lag is the node's own.
   */
  async snapshot(namespaces?: NamespaceFilter): Promise<FleetStats> {
    const [counts, usage] = await Promise.all([this.counts(namespaces), this.usage(namespaces)]);
    const { count, values } = this.latency.percentiles([50, 95, 99]);
    return {
      ...counts,
      throughput: {
        completedPerSecond1m: this.completions.perSecond(60),
        completedPerSecond5m: this.completions.perSecond(300),
        failedPerSecond1m: this.failures.perSecond(60),
        failedPerSecond5m: this.failures.perSecond(300),
      },
      latencyMs: { count, p50: values[0], p95: values[1], p99: values[2] },
      eventLoop: this.eventLoopLag(),
      uptimeSeconds: Math.round((performance.now() - this.startedAt) / 1000),
      usage,
    };
  }

  /** The task and agent counts of a snapshot, of the namespaces of the filter (all when undefined). */
  async counts(namespaces?: NamespaceFilter): Promise<Pick<FleetStats, 'tasks' | 'agents'>> {
    const [taskCounts, agentCounts] = await Promise.all([this.store.taskCounts({ namespaces }), this.store.agentCounts({ namespaces })]);
    const byStatus = Object.fromEntries(TASK_STATUSES.map((s) => [s, 0])) as Record<TaskStatus, number>;
    const byType: Record<string, Partial<Record<TaskStatus, number>>> = {};
    const queueDepthByPriority: Record<string, number> = {};
    for (const c of taskCounts) {
      byStatus[c.status] += c.count;
      const t = (byType[c.type] ??= {});
      t[c.status] = (t[c.status] ?? 0) + c.count;
      if (c.status === 'queued') queueDepthByPriority[c.priority] = (queueDepthByPriority[c.priority] ?? 0) + c.count;
    }
    const agentsByStatus = Object.fromEntries(AGENT_STATUSES.map((s) => [s, 0])) as Record<AgentStatus, number>;
    for (const c of agentCounts) agentsByStatus[c.status] = c.count;
    return { tasks: { byStatus, byType, queueDepthByPriority }, agents: { byStatus: agentsByStatus } };
  }
}
