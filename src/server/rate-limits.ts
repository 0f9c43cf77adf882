import { createHash } from 'node:crypto';
import fp from 'fastify-plugin';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { FleetError } from '../core/errors.js';
import type { RateLimits, RouteGroup } from '../limits/rate-limits.js';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The rate-limit group of the route; GET and HEAD routes default to read, the others to write. */
    rateLimit?: RouteGroup;
  }
}

/** The client a request counts against: its API key (hashed, never stored as is), else its IP. */
function clientKey(request: FastifyRequest): string {
  const auth = request.headers.authorization ?? request.headers['x-api-key'];
  if (typeof auth === 'string' && auth !== '') return `key:${createHash('sha256').update(auth).digest('base64url').slice(0, 22)}`;
  return `ip:${request.ip}`;
}

function groupOf(request: FastifyRequest): RouteGroup {
  return request.routeOptions.config?.rateLimit ?? (request.method === 'GET' || request.method === 'HEAD' ? 'read' : 'write');
}

async function enforce(limits: RateLimits, group: RouteGroup, key: string, reply: FastifyReply): Promise<void> {
  const d = await limits.consume(group, key);
  if (!d) return;
  void reply.header('ratelimit-limit', d.limit).header('ratelimit-remaining', d.remaining).header('ratelimit-reset', d.resetSeconds);
  if (d.allowed) return;
  void reply.header('retry-after', d.resetSeconds);
  throw new FleetError('FLEETD_ERR_RATE_LIMITED', `too many ${group} requests; retry in ${d.resetSeconds} s`, {
    group,
    limit: d.limit,
    retryAfterSeconds: d.resetSeconds,
  });
}

/**
 * Applies the budgets of src/limits/ to every request, with RateLimit-* headers on every response
 * and Retry-After on a 429. Heartbeats count against their agent (known from the path, so before
 * the body is read); claims against theirs, known once the body has been validated.
 */
export const rateLimitPlugin = fp<{ limits: RateLimits }>(async (app, { limits }) => {
  app.addHook('onRequest', async (request, reply) => {
    const group = groupOf(request);
    if (group === 'claim') return;
    const key = group === 'heartbeat' ? `agent:${(request.params as { id?: string }).id}` : clientKey(request);
    await enforce(limits, group, key, reply);
  });
  if (!limits.has('claim')) return;
  app.addHook('preHandler', async (request, reply) => {
    if (groupOf(request) !== 'claim') return;
    await enforce(limits, 'claim', `agent:${(request.body as { agentId: string }).agentId}`, reply);
  });
});
