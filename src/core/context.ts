import type { Bus } from '../bus/bus.js';
import type { FleetdConfig } from '../config.js';
import type { AgentReleaseResult, Store, TaskTransition } from '../store/store.js';
import type { StatsService } from './stats.js';

export interface Logger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

/** What the core services share: the store, the bus, the clock, and the helpers that publish events. */
export interface FleetContext {
  store: Store;
  bus: Bus;
  config: Readonly<FleetdConfig>;
  now: () => number;
  log: Logger;
  stats: StatsService;
  maintenance: { batchSize: number; maxSleepMs: number };
  onMaintenanceError: (err: unknown, service: string) => void;
  /** Publishes the events for tasks that moved outside a request (expiry, promotion, agent release). */
  publishTransitions(transitions: TaskTransition[], reason: 'lease_expired' | 'agent_offline' | 'due'): void;
  publishRelease(released: AgentReleaseResult, event: 'agent.offline' | 'agent.deleted'): void;
}
