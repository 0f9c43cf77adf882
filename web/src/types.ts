/**
 * The API's JSON shapes, as the dashboard reads them: the wire contract's own types (times are
 * ISO 8601 strings, on the REST API and on the event stream alike), never restated here. Type
 * imports are erased at build, so the schemas behind them are not in the bundle; the status lists
 * are plain arrays from the domain.
 */
export type {
  AgentJson as Agent,
  CaseJson as Case,
  CaseMemberJson as CaseMember,
  LockJson as Lock,
  PipelineInfoJson as PipelineInfo,
  PipelineStatsJson as PipelineStats,
  ReadinessJson as Readiness,
  RunJson as PipelineRun,
  ScheduleJson as Schedule,
  StatsJson as FleetStats,
  StepJson as StepState,
  TaskJson as Task,
  TaskSummaryJson as TaskSummary,
  ActivityEntryJson as ActivityEntry,
  TaskActivityJson as TaskActivity,
  TaskTypeJson as TaskType,
  TaskTypeDetailJson as TaskTypeDetail,
} from '../../src/domain/wire.js';
export type { StreamEvent as LiveEvent } from '../../src/protocol/events.js';
export type { Page, TaskStatus } from '../../src/domain/types.js';
export { TASK_STATUSES } from '../../src/domain/types.js';
export { RUN_STATUSES } from '../../src/domain/runs.js';
