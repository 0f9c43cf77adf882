import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { Redis } from 'ioredis';
import { maskedConfig } from '../../config.js';
import type { DependencyStatus } from '../../domain/dependencies.js';
import { FleetError } from '../../domain/errors.js';
import { iso, ReadinessSchema, StatsSchema, type DependencyJson } from '../../domain/wire.js';
import { FLEETD_VERSION } from '../version.js';
import { readNamespaces } from '../namespaces.js';
import { NamespaceName } from '../schemas.js';
import { errors, type RouteDeps } from './deps.js';

/** Longest a readiness check waits on one part, in ms: a probe must answer, even about a hung store. */
const CHECK_TIMEOUT_MS = 2_000;

async function check(probe: () => Promise<unknown>): Promise<string> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${CHECK_TIMEOUT_MS} ms`)), CHECK_TIMEOUT_MS);
  });
  try {
    await Promise.race([probe(), timeout]);
    return 'ok';
  } catch (err) {
    return (err as Error).message || String(err);
  } finally {
    clearTimeout(timer);
  }
}

const Health = Type.Object({
  status: Type.Literal('ok'),
  version: Type.String(),
  uptimeSeconds: Type.Integer({ description: 'Seconds since this server started' }),
});

/** Each dependency's status with its time as ISO 8601, as everything on the wire. */
const dependencyJson = (status: Partial<Record<string, DependencyStatus>>): Record<string, DependencyJson> =>
  Object.fromEntries(Object.entries(status).map(([name, d]) => [name, { ...d!, since: iso(d!.since) }]));

export const systemRoutes: FastifyPluginAsyncTypebox<RouteDeps & { redis?: Redis }> = async (app, { fleet, config, redis, dependencies: deps }) => {
  const startedAt = performance.now();

  app.get(
    '/healthz',
    {
      config: { rateLimit: 'exempt' },
      schema: {
        tags: ['system'],
        summary: 'Liveness: the process answers',
        description: 'Answers while the process runs, whatever the state of the store; never rate-limited. Says the version and uptime.',
        response: { 200: Health },
      },
    },
    async () => ({ status: 'ok' as const, version: FLEETD_VERSION, uptimeSeconds: Math.floor((performance.now() - startedAt) / 1000) }),
  );

  app.get(
    '/readyz',
    {
      config: { rateLimit: 'exempt' },
      schema: {
        tags: ['system'],
        summary: 'Readiness: the node can serve requests',
        description:
          'Checks each part the node needs (the store, and Redis when configured), each within 2 s. 200 `ready` when all answer; 200 `degraded` while only Redis is away (the node still serves, with per-node rate limits and no shared cache) with the reason in `checks`; 503 FLEETD_ERR_UNAVAILABLE with Retry-After while the store does not answer, naming it in the message and `details.checks`. Never rate-limited.',
        response: { 200: ReadinessSchema, ...errors(503) },
      },
    },
    async () => {
      const dependencies = dependencyJson(deps?.status() ?? {});
      const checks: Record<string, string> = { store: await check(() => fleet.store.ping()) };
      if (redis) checks.redis = await check(() => redis.ping());
      if (checks.store !== 'ok') {
        throw new FleetError('FLEETD_ERR_UNAVAILABLE', `not ready: store (${checks.store})`, { checks, dependencies, retryAfterSeconds: 1 });
      }
      const pool = fleet.store.poolStats?.();
      const degraded = Object.values(checks).some((state) => state !== 'ok') || Object.values(dependencies).some((d) => !d.up);
      return { status: degraded ? ('degraded' as const) : ('ready' as const), store: fleet.store.driver, checks, dependencies, ...(pool ? { pool: { ...pool } } : {}) };
    },
  );

  app.get(
    '/v1/stats',
    {
      schema: {
        tags: ['system'],
        summary: 'Counts of tasks and agents, throughput, latency and event-loop lag',
        description:
          'Read from counters kept up to date on every write: never a table scan, cheap to poll. Task and agent counts are of the namespaces the key reaches (or the one named); a key that does not reach them all has its agents counted from their table.',
        querystring: Type.Object({ namespace: Type.Optional(NamespaceName) }, { additionalProperties: false }),
        response: { 200: StatsSchema, ...errors(400, 404) },
      },
    },
    async (request, reply) => {
      void reply.header('cache-control', 'no-store');
      return fleet.stats.snapshot(readNamespaces(request, (request.query as { namespace?: string }).namespace));
    },
  );

  app.get(
    '/v1/config',
    {
      config: { access: 'admin' },
      schema: {
        tags: ['system'],
        summary: 'The resolved configuration',
        description: 'Every setting as this node resolved it (defaults, file, environment, flags), secrets masked. Needs an admin key.',
        response: { 200: Type.Record(Type.String(), Type.Unknown()) },
      },
    },
    async () => maskedConfig(config),
  );
};
