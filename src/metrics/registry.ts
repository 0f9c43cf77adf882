import { Registry, collectDefaultMetrics } from 'prom-client';
import { LOOP_RESOLUTION_MS } from '../core/stats.js';

/**
 * The process's Prometheus registry, served at GET /metrics. Any module adds its metrics by creating
 * them with `registers: [registry]` (once, at module level: a name can be registered only once), and
 * `onCollect` lets per-server sources fill gauges at scrape time.
 *
 * The default metrics give event-loop lag (nodejs_eventloop_lag_*), heap (nodejs_heap_*) and
 * resident memory (process_resident_memory_bytes).
 */
export const registry = new Registry();
collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: LOOP_RESOLUTION_MS });

type Collector = () => void | Promise<void>;
const collectors = new Set<Collector>();

/** Runs `collect` before each scrape; returns the function that stops it. */
export function onCollect(collect: Collector): () => void {
  collectors.add(collect);
  return () => collectors.delete(collect);
}

/** The registry's text exposition, after every collector has filled its gauges. */
export async function scrape(): Promise<string> {
  await Promise.all([...collectors].map((c) => c()));
  return registry.metrics();
}
