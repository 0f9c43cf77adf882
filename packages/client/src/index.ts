/** fleetd/client: the TypeScript SDK for submitters (`FleetClient`) and agents (`client.agent(...).work(handler)`). */
export { FleetClient, type FleetClientOptions, type TaskSubmit, type TaskFilters, type Submitted, type SubmittedMinimal } from './fleet-client.js';
export { SubscriptionGapError, type Subscription, type SubscribeOptions, type Gap } from './subscription.js';
export { FleetAgent, type FleetAgentOptions, type TaskHandler, type TaskContext, type TaskUsage } from './agent.js';
export type { LogLevel } from './activity.js';
export {
  NonRetryableError,
  FleetApiError,
  RetryLaterError,
  TaskRevokedError,
  TaskOutcomeError,
  TaskFailedError,
  TaskCancelledError,
  TaskWaitTimeoutError,
} from './errors.js';
export type {
  AgentInput,
  AgentJson,
  AgentMessage,
  ErrorCode,
  ErrorJson,
  EventData,
  ScheduleInput,
  ScheduleJson,
  ServerMessage,
  StatsJson,
  StreamEvent,
  StreamEventName,
  TaskInput,
  TaskJson,
  TaskStatus,
  TaskSummaryJson,
  ActivityEntryJson,
  TaskActivityJson,
} from './wire.js';
export { AGENT_PROTOCOL_VERSION, CloseCodes, DEFAULT_NAMESPACE, ERROR_STATUS, NAMESPACE_HEADER, NAMESPACE_PATTERN } from './wire.js';
