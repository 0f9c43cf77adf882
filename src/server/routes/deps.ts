import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { ResponseCache } from '../../cache/response-cache.js';
import type { FleetdConfig } from '../../config.js';
import type { Fleet } from '../../core/fleet.js';
import { ErrorBody } from '../schemas.js';

export interface RouteDeps {
  fleet: Fleet;
  config: Readonly<FleetdConfig>;
  /** The response cache for reads that deserve one; undefined when it is turned off. */
  cache?: ResponseCache;
}

export type Routes = FastifyPluginAsyncTypebox<RouteDeps>;

/** The error responses a route documents, for the OpenAPI document and the serialiser. */
export const errors = (...statuses: number[]) => Object.fromEntries(statuses.map((s) => [s, ErrorBody]));
