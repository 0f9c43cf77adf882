/** The API's JSON shapes, as the dashboard reads them (times are ISO 8601 strings). */

export type TaskStatus = 'scheduled' | 'queued' | 'leased' | 'completed' | 'dead' | 'cancelled';
export const TASK_STATUSES: TaskStatus[] = ['scheduled', 'queued', 'leased', 'completed', 'dead', 'cancelled'];
export type AgentStatus = 'online' | 'stale' | 'offline';

export interface Task {
  id: number;
  type: string;
  payload?: unknown;
  priority: number;
  requires: string[];
  status: TaskStatus;
  idempotencyKey: string | null;
  attempts: number;
  maxAttempts: number;
  leaseMs: number;
  backoffMs: number;
  runAt: string;
  createdAt: string;
  updatedAt: string;
  claimedAt: string | null;
  completedAt: string | null;
  agentId: string | null;
  leaseExpiresAt: string | null;
  result?: unknown;
  error: unknown;
}

export interface Agent {
  id: string;
  name: string;
  capabilities: string[];
  labels: Record<string, string>;
  maxConcurrency: number;
  status: AgentStatus;
  createdAt: string;
  lastHeartbeatAt: string;
}

export interface Lock {
  id: string;
  agentId: string;
  resources: string[];
  description: string;
  createdAt: string;
  expiresAt: string;
}

export interface Page<T> {
  items: T[];
  nextCursor: string | null;
}

export interface FleetStats {
  tasks: {
    byStatus: Record<TaskStatus, number>;
    byType: Record<string, Partial<Record<TaskStatus, number>>>;
    queueDepthByPriority: Record<string, number>;
  };
  agents: { byStatus: Record<AgentStatus, number> };
  throughput: { completedPerSecond1m: number; completedPerSecond5m: number; failedPerSecond1m: number; failedPerSecond5m: number };
  latencyMs: { count: number; p50: number | null; p95: number | null; p99: number | null };
  eventLoop: { lagP50Ms: number; lagP99Ms: number; lagMaxMs: number };
  uptimeSeconds: number;
}

/**
 * One event of the /v1/events stream. Task events carry the task without payload and result. Times
 * here are epoch ms, `at` (when fleetd published it) as well as those in `data`.
 */
export interface LiveEvent {
  topic: string;
  name: string;
  data: any;
  at: number;
}

export type RunStatus = 'queued' | 'running' | 'completed' | 'failed' | 'cancelled';
export const RUN_STATUSES: RunStatus[] = ['queued', 'running', 'completed', 'failed', 'cancelled'];
export type StepStatus = 'pending' | 'running' | 'completed' | 'failed' | 'skipped' | 'cancelled';

export interface StepState {
  name: string;
  status: StepStatus;
  attempts: number;
  output: unknown;
  error: unknown;
  startedAt: string | null;
  finishedAt: string | null;
  nextAttemptAt: string | null;
}

export interface PipelineRun {
  id: number;
  pipeline: string;
  status: RunStatus;
  input: unknown;
  output: unknown;
  error: unknown;
  idempotencyKey: string | null;
  createdAt: string;
  updatedAt: string;
  finishedAt: string | null;
  steps: StepState[];
}

export interface PipelineInfo {
  name: string;
  description?: string;
  steps: { name: string; kind: string; needs: string[] }[];
}

export interface PipelineStats {
  lane: { runsActive: number; stepsRunning: number; stepsWaitingForLane: number };
}

export interface Case {
  id: number;
  title: string;
  size: number;
  createdAt: string;
  updatedAt: string;
}

export interface CaseMember {
  runId: number;
  similarity: number;
  text: string;
  addedAt: string;
}

/** GET /readyz while the store answers; with Redis down it is `degraded` and still serving. */
export interface Readiness {
  status: 'ready' | 'degraded';
  dependencies: Partial<Record<'postgres' | 'redis', { up: boolean; since: number; reason: string | null }>>;
}
