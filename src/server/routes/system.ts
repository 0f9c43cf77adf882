import { Type } from '@sinclair/typebox';
import { maskedConfig } from '../../config.js';
import { FleetError } from '../../core/errors.js';
import type { Routes } from './deps.js';

export const systemRoutes: Routes = async (app, { fleet, config, dependencies }) => {
  app.get('/healthz', async () => ({ status: 'ok' }));

  /**
   * Ready while the store answers; 503 (FLEETD_ERR_UNAVAILABLE, with the dependencies in its
   * details) while it does not. A node without Redis still serves (per-node rate limits, no shared
   * cache, no events from other nodes): it is ready, and says `degraded`.
   */
  app.get('/readyz', async () => {
    const status = dependencies?.status() ?? {};
    try {
      await fleet.store.ping();
    } catch (err) {
      throw new FleetError('FLEETD_ERR_UNAVAILABLE', `the store is not reachable: ${(err as Error).message}`, {
        dependencies: status,
        retryAfterSeconds: 1,
      });
    }
    const pool = fleet.store.poolStats?.();
    const degraded = Object.values(status).some((d) => !d.up);
    return { status: degraded ? 'degraded' : 'ready', store: fleet.store.driver, ...(pool ? { pool } : {}), dependencies: status };
  });

  app.get(
    '/v1/stats',
    { schema: { response: { 200: Type.Unknown() } } },
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
