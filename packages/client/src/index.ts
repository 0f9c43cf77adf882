/** fleetd/client: the TypeScript SDK for submitters (`FleetClient`) and agents (`client.agent(...).work(handler)`). */
export { FleetClient, type FleetClientOptions, type TaskSubmit, type TaskFilters, type Submitted, type Subscription } from './fleet-client.js';
export { FleetAgent, type FleetAgentOptions, type TaskHandler, type TaskContext } from './agent.js';
export { NonRetryableError, FleetApiError, RetryLaterError } from './errors.js';
export type {
  AgentInput,
  AgentJson,
  AgentMessage,
  ErrorCode,
  ErrorJson,
  EventData,
  ServerMessage,
  StatsJson,
  StreamEvent,
  StreamEventName,
  TaskInput,
  TaskJson,
  TaskStatus,
  TaskSummaryJson,
} from './wire.js';
export { AGENT_PROTOCOL_VERSION, CloseCodes, ERROR_STATUS } from './wire.js';
