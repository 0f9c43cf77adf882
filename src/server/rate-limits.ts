import fp from 'fastify-plugin';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { FleetError } from '../domain/errors.js';
import type { RateLimits, RouteGroup } from '../limits/rate-limits.js';
import { ownerOf } from './auth.js';
import { hookList } from './route-hooks.js';

declare module 'fastify' {
  interface FastifyContextConfig {
    /**
     * The rate-limit group of the route; GET and HEAD routes default to read, the others to write.
     * `exempt`: never limited — the health probes, which must answer most when the server is busiest.
     */
    rateLimit?: RouteGroup | 'exempt';
  }
}

/**
 * The client a request counts against: its API key or agent (authentication runs first), else its
 * address — on public routes, unmatched ones, and everywhere when auth is off.
 */
const clientKey = (request: FastifyRequest): string => ownerOf(request);

/** The route's group: its own, else read for GET and HEAD and write for the rest. */
function groupOf(config: { rateLimit?: RouteGroup | 'exempt' } | undefined, method: string | string[]): RouteGroup | 'exempt' {
  const methods = Array.isArray(method) ? method : [method];
  return config?.rateLimit ?? (methods.every((m) => m === 'GET' || m === 'HEAD') ? 'read' : 'write');
}

/** Sets the RateLimit headers; a rejection becomes a 429 with Retry-After. */
function enforce(limits: RateLimits, group: RouteGroup, key: string, reply: FastifyReply, done: (err?: Error) => void): void {
  const d = limits.consume(group, key);
  if (!d) return done();
  void reply.header('ratelimit-limit', d.limit).header('ratelimit-remaining', d.remaining).header('ratelimit-reset', d.resetSeconds);
  if (d.allowed) return done();
  void reply.header('retry-after', d.resetSeconds);
  done(
    new FleetError('FLEETD_ERR_RATE_LIMITED', `too many ${group} requests; retry in ${d.resetSeconds} s`, {
      group,
      limit: d.limit,
      retryAfterSeconds: d.resetSeconds,
    }),
  );
}

type Hook = (request: FastifyRequest, reply: FastifyReply, done: (err?: Error) => void) => void;

/**
 * Applies the budgets of src/limits/ to every request, with RateLimit-* headers on every response
 * and Retry-After on a 429. Each route gets the one hook its group needs, chosen once when the
 * route is added: heartbeats count against their agent (known from the path, so before the body
 * is read), claims against theirs (known once the body has been validated), the rest against
 * their client. Requests that match no route count as reads or writes of their client.
 */
export const rateLimitPlugin = fp<{ limits: RateLimits }>(async (app, { limits }) => {
  const byClient = (group: RouteGroup): Hook => (request, reply, done) => enforce(limits, group, clientKey(request), reply, done);
  const heartbeat: Hook = (request, reply, done) =>
    enforce(limits, 'heartbeat', `agent:${(request.params as { id?: string }).id}`, reply, done);
  const claim: Hook = (request, reply, done) =>
    enforce(limits, 'claim', `agent:${(request.body as { agentId: string }).agentId}`, reply, done);

  app.addHook('onRoute', (route) => {
    const group = groupOf(route.config as { rateLimit?: RouteGroup | 'exempt' } | undefined, route.method);
    if (group === 'exempt' || !limits.has(group)) return;
    const add = (existing: unknown, hook: Hook) => [...hookList(existing), hook];
    if (group === 'claim') route.preHandler = add(route.preHandler, claim) as typeof route.preHandler;
    else route.onRequest = add(route.onRequest, group === 'heartbeat' ? heartbeat : byClient(group)) as typeof route.onRequest;
  });

  app.addHook('onClose', async () => limits.close());

  const unmatched = { read: byClient('read'), write: byClient('write') };
  app.addHook('onRequest', (request, reply, done) => {
    if (request.is404 !== true) return done();
    const group = request.method === 'GET' || request.method === 'HEAD' ? 'read' : 'write';
    if (!limits.has(group)) return done();
    unmatched[group](request, reply, done);
  });
});
