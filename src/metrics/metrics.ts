import { Counter, Gauge, Histogram } from 'prom-client';
import { subscribeOwn } from '../bus/bus.js';
import type { Dependencies } from '../domain/dependencies.js';
import type { Fleet } from '../core/fleet.js';
import type { ResponseCache } from '../cache/response-cache.js';
import { TASK_STATUSES, type Agent } from '../domain/types.js';
import type { ProviderRegistry } from '../providers/registry.js';
import { onCollect, registry } from './registry.js';

/** fleetd's own metrics. Durations are in seconds, as Prometheus conventions ask. */

export const httpRequestDuration = new Histogram({
  name: 'fleetd_http_request_duration_seconds',
  help: 'HTTP request latency by method, route (its pattern, not the URL) and status code',
  labelNames: ['method', 'route', 'status_code'] as const,
  buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
  registers: [registry],
});

/** Agent stream messages by type: how much an agent's SDK batches shows as `batch` against `complete`. */
export const agentStreamMessages = new Counter({
  name: 'fleetd_agent_stream_messages_total',
  help: 'Messages received on agent streams, by type (credit, complete, fail, release, extend, heartbeat, batch, progress, logs, output)',
  labelNames: ['type'] as const,
  registers: [registry],
});

const tasksByStatus = new Gauge({
  name: 'fleetd_tasks',
  help: 'Tasks by status',
  labelNames: ['status'] as const,
  registers: [registry],
});
const queueDepth = new Gauge({
  name: 'fleetd_queue_depth',
  help: 'Queued (claimable) tasks by type and priority',
  labelNames: ['type', 'priority'] as const,
  registers: [registry],
});
const agentsByStatus = new Gauge({
  name: 'fleetd_agents',
  help: 'Agents by status',
  labelNames: ['status'] as const,
  registers: [registry],
});
const taskWait = new Histogram({
  name: 'fleetd_task_claim_wait_seconds',
  help: 'From a task becoming claimable (created or due) to an agent claiming it, by type',
  labelNames: ['type'] as const,
  buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 3600],
  registers: [registry],
});
const taskRun = new Histogram({
  name: 'fleetd_task_run_seconds',
  help: 'From claim to completion, by type',
  labelNames: ['type'] as const,
  buckets: [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 3600],
  registers: [registry],
});
const deadTasks = new Counter({
  name: 'fleetd_tasks_dead_total',
  help: 'Tasks dead-lettered (attempts exhausted or a non-retryable failure), by type',
  labelNames: ['type'] as const,
  registers: [registry],
});
const requeues = new Counter({
  name: 'fleetd_task_requeues_total',
  help: 'Tasks put back in the queue without a result, by reason: lease_expired or agent_offline',
  labelNames: ['reason'] as const,
  registers: [registry],
});
const capableAgents = new Gauge({
  name: 'fleetd_queue_capable_agents',
  help: 'Online agents able to take the oldest queued task of each type (0: the type waits for an agent that is not there)',
  labelNames: ['type'] as const,
  registers: [registry],
});
const storeReady = new Gauge({
  name: 'fleetd_store_ready',
  help: '1 while the store answers (as GET /readyz says), 0 while it does not',
  registers: [registry],
});
// Labelled by driver so that a store without group commit (PostgreSQL) shows no series rather than zeros.
const storeCommits = new Counter({
  name: 'fleetd_store_commits_total',
  help: "Transactions the store committed: SQLite's group commit puts the writes of one turn of the event loop in one",
  labelNames: ['driver'] as const,
  registers: [registry],
});
const storeWrites = new Counter({
  name: 'fleetd_store_writes_total',
  help: 'Writes those transactions carried: divided by fleetd_store_commits_total, how many writes shared a commit',
  labelNames: ['driver'] as const,
  registers: [registry],
});
const storeCommitSeconds = new Counter({
  name: 'fleetd_store_commit_seconds_total',
  help: "Seconds the event loop spent in those transactions' COMMIT: writing their pages to the WAL, and checkpointing it where SQLite does so in the commit",
  labelNames: ['driver'] as const,
  registers: [registry],
});
const storeCheckpoints = new Counter({
  name: 'fleetd_store_checkpoints_total',
  help: "WAL checkpoints SQLite's checkpoint thread ran that copied pages into the database file, off the event loop",
  labelNames: ['driver'] as const,
  registers: [registry],
});
const providerCircuitOpen = new Gauge({
  name: 'fleetd_provider_circuit_open',
  help: '1 while a provider\'s circuit breaker is open (calls fail at once), else 0',
  labelNames: ['provider'] as const,
  registers: [registry],
});

const usageTokens = new Gauge({
  name: 'fleetd_usage_tokens',
  help: 'Tokens agents reported with completions and failures over the last hour or day, by type, window (hour, day) and direction (input, output)',
  labelNames: ['type', 'window', 'direction'] as const,
  registers: [registry],
});
const usageCost = new Gauge({
  name: 'fleetd_usage_cost_usd',
  help: 'Cost in US dollars agents reported over the last hour or day, by type and window (hour, day)',
  labelNames: ['type', 'window'] as const,
  registers: [registry],
});
const usageReports = new Gauge({
  name: 'fleetd_usage_reports',
  help: 'Usage reports (completions and failures that carried usage) over the last hour or day, by type and window',
  labelNames: ['type', 'window'] as const,
  registers: [registry],
});
const usageKeyTokens = new Gauge({
  name: 'fleetd_usage_key_tokens',
  help: 'Tokens reported over the last hour or day by the concurrency keys of each type that spent most (key "" is tasks without one), by direction',
  labelNames: ['type', 'key', 'window', 'direction'] as const,
  registers: [registry],
});
const usageKeyCost = new Gauge({
  name: 'fleetd_usage_key_cost_usd',
  help: 'Cost in US dollars reported over the last hour or day by the concurrency keys of each type that spent most (key "" is tasks without one)',
  labelNames: ['type', 'key', 'window'] as const,
  registers: [registry],
});
/** Bounds on the usage series: the types and, per type, the keys that spent most over the day. */
const USAGE_TYPES_MAX = 200;
const USAGE_KEYS_MAX = 10;

/** Bounds on the scrape-time look at queued types and online agents, so a huge fleet cannot make a scrape slow. */
const CAPABLE_TYPES_MAX = 200;
const ONLINE_AGENTS_MAX = 10_000;

const cacheRequests = new Counter({
  name: 'fleetd_cache_requests_total',
  help: 'Response cache lookups by result: hit (L1), l2_hit, stale (served while recomputed), miss',
  labelNames: ['result'] as const,
  registers: [registry],
});
const cacheEvictions = new Counter({
  name: 'fleetd_cache_evictions_total',
  help: 'Entries the L1 cache evicted to stay within its entry and byte bounds',
  registers: [registry],
});
const cacheEntries = new Gauge({ name: 'fleetd_cache_entries', help: 'Entries in the L1 cache', registers: [registry] });
const cacheBytes = new Gauge({ name: 'fleetd_cache_bytes', help: 'Bytes of response bodies in the L1 cache', registers: [registry] });
const cacheHitRatio = new Gauge({
  name: 'fleetd_cache_hit_ratio',
  help: 'Share of lookups answered from the cache (L1, L2 or stale) since start',
  registers: [registry],
});

/** Feeds the task and agent metrics from one fleet: counts at scrape time, durations from events. */
export function observeFleet(fleet: Fleet): () => void {
  const committed = { commits: 0, writes: 0, commitSeconds: 0, checkpoints: 0 };
  const offCollect = onCollect(async () => {
    const commits = fleet.store.commitStats?.();
    if (commits) {
      const driver = fleet.store.driver;
      storeCommits.inc({ driver }, commits.commits - committed.commits);
      storeWrites.inc({ driver }, commits.writes - committed.writes);
      storeCommitSeconds.inc({ driver }, commits.commitSeconds - committed.commitSeconds);
      storeCheckpoints.inc({ driver }, commits.checkpoints - committed.checkpoints);
      Object.assign(committed, commits);
    }
    let tasks, agents;
    try {
      [tasks, agents] = await Promise.all([fleet.store.taskCounts(), fleet.store.agentCounts()]);
      storeReady.set(1);
    } catch {
      // The store is unreachable: the scrape still answers (fleetd_dependency_up says why, and the
      // alert on fleetd_store_ready can fire), with the last counts.
      storeReady.set(0);
      return;
    }
    tasksByStatus.reset();
    queueDepth.reset();
    agentsByStatus.reset();
    for (const status of TASK_STATUSES) tasksByStatus.set({ status }, 0);
    for (const c of tasks) {
      tasksByStatus.inc({ status: c.status }, c.count);
      if (c.status === 'queued') queueDepth.inc({ type: c.type, priority: String(c.priority) }, c.count);
    }
    for (const status of ['online', 'stale', 'offline']) agentsByStatus.set({ status }, 0);
    for (const c of agents) agentsByStatus.set({ status: c.status }, c.count);
    const queuedTypes = [...new Set(tasks.filter((c) => c.status === 'queued' && c.count > 0).map((c) => c.type))];
    await countCapableAgents(fleet, queuedTypes.slice(0, CAPABLE_TYPES_MAX));
    await exportUsage(fleet);
  });
  // Each node counts what it did, not what another node's events relayed tell it: summed over the
  // nodes, as Prometheus and the alerts do, each task counts once.
  const offClaimed = subscribeOwn(fleet.bus, 'task.claimed', ({ task }) => {
    if (task.claimedAt === null) return;
    const claimableSince = Math.max(task.runAt, task.createdAt);
    taskWait.observe({ type: task.type }, Math.max(0, task.claimedAt - claimableSince) / 1000);
  });
  const offCompleted = subscribeOwn(fleet.bus, 'task.completed', ({ task }) => {
    if (task.claimedAt === null || task.completedAt === null) return;
    taskRun.observe({ type: task.type }, Math.max(0, task.completedAt - task.claimedAt) / 1000);
  });
  const offDead = subscribeOwn(fleet.bus, 'task.dead', ({ task }) => deadTasks.inc({ type: task.type }));
  const offRequeued = subscribeOwn(fleet.bus, 'task.requeued', ({ reason }) => requeues.inc({ reason }));
  return () => {
    offCollect();
    offClaimed();
    offCompleted();
    offDead();
    offRequeued();
  };
}

/** The usage sums of the types that spent most over the day, and of their top keys. */
async function exportUsage(fleet: Fleet): Promise<void> {
  let usage;
  try {
    usage = await fleet.stats.usage();
  } catch {
    return;
  }
  for (const g of [usageTokens, usageCost, usageReports, usageKeyTokens, usageKeyCost]) g.reset();
  const spent = (u: { day: { costUsd: number; inputTokens: number; outputTokens: number } }) => [u.day.costUsd, u.day.inputTokens + u.day.outputTokens];
  const types = [...usage.types].sort((a, b) => {
    const [ca, ta] = spent(a);
    const [cb, tb] = spent(b);
    return cb - ca || tb - ta;
  });
  for (const t of types.slice(0, USAGE_TYPES_MAX)) {
    for (const window of ['hour', 'day'] as const) {
      const totals = t[window];
      usageTokens.set({ type: t.type, window, direction: 'input' }, totals.inputTokens);
      usageTokens.set({ type: t.type, window, direction: 'output' }, totals.outputTokens);
      usageCost.set({ type: t.type, window }, totals.costUsd);
      usageReports.set({ type: t.type, window }, totals.reports);
      for (const k of t.keys.slice(0, USAGE_KEYS_MAX)) {
        usageKeyTokens.set({ type: t.type, key: k.key ?? '', window, direction: 'input' }, k[window].inputTokens);
        usageKeyTokens.set({ type: t.type, key: k.key ?? '', window, direction: 'output' }, k[window].outputTokens);
        usageKeyCost.set({ type: t.type, key: k.key ?? '', window }, k[window].costUsd);
      }
    }
  }
}

/** Whether an agent has every capability a task requires. */
function canTake(agent: Pick<Agent, 'capabilities'>, requires: readonly string[]): boolean {
  return requires.every((r) => agent.capabilities.includes(r));
}

/** For each queued type, the online agents able to take its oldest queued task. */
async function countCapableAgents(fleet: Fleet, types: string[]): Promise<void> {
  capableAgents.reset();
  if (types.length === 0) return;
  const [online, heads] = await Promise.all([
    fleet.store.agentList({ status: 'online', limit: ONLINE_AGENTS_MAX }),
    Promise.all(types.map((type) => fleet.store.taskList({ status: 'queued', type, limit: 1, order: 'asc' }))),
  ]);
  types.forEach((type, i) => {
    const head = heads[i].items[0];
    if (head) capableAgents.set({ type }, online.items.filter((a) => canTake(a, head.requires)).length);
  });
}

/** Exports whether each provider's circuit breaker is open. */
export function observeProviders(providers: ProviderRegistry): () => void {
  return onCollect(() => {
    for (const p of providers.usage()) providerCircuitOpen.set({ provider: p.name }, p.circuit === 'open' ? 1 : 0);
  });
}

/** Exports a response cache's counters and size. */
export function observeCache(cache: ResponseCache): () => void {
  const reported = { hit: 0, l2_hit: 0, stale: 0, miss: 0, evictions: 0 };
  return onCollect(() => {
    const s = cache.stats;
    for (const result of ['hit', 'l2_hit', 'stale', 'miss'] as const) {
      cacheRequests.inc({ result }, s[result] - reported[result]);
      reported[result] = s[result];
    }
    cacheEvictions.inc(s.evictions - reported.evictions);
    reported.evictions = s.evictions;
    cacheEntries.set(cache.size.entries);
    cacheBytes.set(cache.size.bytes);
    const lookups = s.hit + s.l2_hit + s.stale + s.miss;
    cacheHitRatio.set(lookups === 0 ? 0 : (lookups - s.miss) / lookups);
  });
}

const dependencyUp = new Gauge({
  name: 'fleetd_dependency_up',
  help: 'Whether a service this node depends on (postgres, redis) is reachable: 1 up, 0 down',
  labelNames: ['dependency'] as const,
  registers: [registry],
});
const dependencyOutages = new Counter({
  name: 'fleetd_dependency_outages_total',
  help: 'Outages of a dependency seen by this node since it started',
  labelNames: ['dependency'] as const,
  registers: [registry],
});
const dependencyReconnects = new Counter({
  name: 'fleetd_dependency_reconnects_total',
  help: "Connections to a dependency re-established after they dropped (the pool, LISTEN, each Redis connection)",
  labelNames: ['dependency'] as const,
  registers: [registry],
});

/** Exports whether each dependency is up, and its outages and reconnections. */
export function observeDependencies(dependencies: Dependencies): () => void {
  const reported = new Map<string, { outages: number; reconnects: number }>();
  return onCollect(() => {
    for (const [dependency, s] of Object.entries(dependencies.status())) {
      const last = reported.get(dependency) ?? { outages: 0, reconnects: 0 };
      dependencyUp.set({ dependency }, s.up ? 1 : 0);
      dependencyOutages.inc({ dependency }, s.outages - last.outages);
      dependencyReconnects.inc({ dependency }, s.reconnects - last.reconnects);
      reported.set(dependency, { outages: s.outages, reconnects: s.reconnects });
    }
  });
}
