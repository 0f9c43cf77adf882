import { Type } from '@sinclair/typebox';
import { maskedConfig } from '../../config.js';
import type { DependencyStatus } from '../../domain/dependencies.js';
import { FleetError } from '../../domain/errors.js';
import { iso, ReadinessSchema, StatsSchema, type DependencyJson } from '../../domain/wire.js';
import { errors, type Routes } from './deps.js';

/** Each dependency's status with its time as ISO 8601, as everything on the wire. */
const dependencyJson = (status: Partial<Record<string, DependencyStatus>>): Record<string, DependencyJson> =>
  Object.fromEntries(Object.entries(status).map(([name, d]) => [name, { ...d!, since: iso(d!.since) }]));

export const systemRoutes: Routes = async (app, { fleet, config, dependencies: deps }) => {
  app.get('/healthz', async () => ({ status: 'ok' }));

  /**
   * Ready while the store answers; 503 (FLEETD_ERR_UNAVAILABLE, with the dependencies in its
   * details) while it does not. A node without Redis still serves (per-node rate limits, no shared
   * cache, no events from other nodes): it is ready, and says `degraded`.
   */
  app.get('/readyz', { schema: { response: { 200: ReadinessSchema, ...errors(503) } } }, async () => {
    const dependencies = dependencyJson(deps?.status() ?? {});
    try {
      await fleet.store.ping();
    } catch (err) {
      throw new FleetError('FLEETD_ERR_UNAVAILABLE', `the store is not reachable: ${(err as Error).message}`, { dependencies, retryAfterSeconds: 1 });
    }
    const pool = fleet.store.poolStats?.();
    const degraded = Object.values(dependencies).some((d) => !d.up);
    return { status: degraded ? ('degraded' as const) : ('ready' as const), store: fleet.store.driver, ...(pool ? { pool } : {}), dependencies };
  });

  app.get(
    '/v1/stats',
    { schema: { response: { 200: StatsSchema } } },
    async (_request, reply) => {
      void reply.header('cache-control', 'no-store');
      return fleet.stats.snapshot();
    },
  );

  app.get(
    '/v1/config',
    { config: { access: 'admin' }, schema: { description: 'The resolved configuration, secrets masked', response: { 200: Type.Record(Type.String(), Type.Unknown()) } } },
    async () => maskedConfig(config),
  );
};
