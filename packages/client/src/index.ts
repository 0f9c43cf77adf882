/** fleetd/client: the TypeScript SDK for submitters (`FleetClient`) and agents (`client.agent(...).work(handler)`). */
export { FleetClient, type FleetClientOptions, type TaskSubmit, type TaskFilters, type Submitted, type Subscription } from './fleet-client.js';
export { FleetAgent, type FleetAgentOptions, type TaskHandler, type TaskContext } from './agent.js';
export { NonRetryableError, FleetApiError } from './errors.js';
export type { TaskJson, AgentJson } from './wire.js';
export { CloseCodes, AGENT_PROTOCOL_VERSION } from './wire.js';
export type { StreamEvent } from './wire.js';
