import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { ResponseCache } from '../../cache/response-cache.js';
import type { FleetdConfig } from '../../config.js';
import type { Dependencies } from '../../domain/dependencies.js';
import type { Fleet } from '../../core/fleet.js';
import type { NamespaceFilter } from '../../domain/namespaces.js';
import { readNamespaces } from '../namespaces.js';
import type { NamespaceQuotaGuard } from '../quotas.js';
import type { TaskWithoutPayload } from '../../domain/types.js';
import { ErrorBody, minimalTaskJson } from '../../domain/wire.js';
import { sendJsonText } from '../http.js';

export interface RouteDeps {
  fleet: Fleet;
  config: Readonly<FleetdConfig>;
  /** The response cache for reads that deserve one; undefined when it is turned off. */
  cache?: ResponseCache;
  /** Whether the services this node depends on are reachable; absent when the app is built without a server. */
  dependencies?: Dependencies;
  /** The namespaces' quotas, checked where tasks are submitted and agents register. */
  quotas: NamespaceQuotaGuard;
}

export type Routes = FastifyPluginAsyncTypebox<RouteDeps>;

/**
 * Request body limits of the routes whose bodies are small by nature, refused (413) before they are
 * read: a claim, an extension or a heartbeat is a few fields; an agent a name and some labels; a lock
 * at most 256 resource names. Payload-carrying routes use the app-wide limit (maxPayloadBytes).
 */
export const bodyLimits = { control: 4 * 1024, agent: 64 * 1024, lock: 512 * 1024 } as const;

/** The error responses a route documents, for the OpenAPI document and the serialiser. */
export const errors = (...statuses: number[]) => Object.fromEntries(statuses.map((s) => [s, ErrorBody]));

/**
 * A route whose access is `agent`, sent with a key rather than the agent's token, acts for the agent
 * only when the key reaches the agent's namespace: else the agent answers 404, as a missing one.
 * The agent's own token acts in its own namespace (auth made sure it acts for itself), and a key
 * reaching every namespace reaches every agent: neither costs a read.
 */
export async function assertAgentInReach(request: FastifyRequest, fleet: Fleet, agentId: string): Promise<void> {
  const reach = reachToCheck(request);
  if (reach !== undefined) await fleet.agents.get(agentId, reach);
}

/** True when the request reaches the agent it acts for without reading it (see assertAgentInReach). */
export const agentInReachWithoutRead = (request: FastifyRequest): boolean => reachToCheck(request) === undefined;

/** The namespaces the agent must be read and found in; undefined when no read is needed. */
const reachToCheck = (request: FastifyRequest): NamespaceFilter => (request.principal?.kind === 'agent' ? undefined : readNamespaces(request));

/** The agent a request acts for, for routes whose access is `agent` (see server/auth.ts). */
export const bodyAgent = (request: FastifyRequest) => (request.body as { agentId?: string } | undefined)?.agentId;
export const pathAgent = (request: FastifyRequest) => (request.params as { id?: string }).id;
export const queryAgent = (request: FastifyRequest) => (request.query as { agentId?: string } | undefined)?.agentId;

/** `?return=minimal`: the answer's tasks without their payloads, results and errors. */
export const ReturnQuery = Type.Object(
  {
    return: Type.Optional(
      Type.Literal('minimal', { description: 'Answer with each task without its payload, result and error, so that a large payload is not sent back' }),
    ),
  },
  { additionalProperties: false },
);

/**
 * An agent's write answered with ?return=minimal: the task without its payload, result and error
 * (minimalTaskJson), which an agent already has. Sent as text: the route's response schema
 * describes the whole form, which requires them.
 */
export const minimalAnswer = (reply: FastifyReply, task: TaskWithoutPayload): FastifyReply => sendJsonText(reply, JSON.stringify(minimalTaskJson(task)));
