import { Type } from '@sinclair/typebox';
import { maskedConfig } from '../../config.js';
import { FleetError } from '../../domain/errors.js';
import { StatsSchema } from '../../domain/wire.js';
import type { Routes } from './deps.js';

export const systemRoutes: Routes = async (app, { fleet, config }) => {
  app.get('/healthz', async () => ({ status: 'ok' }));

  app.get('/readyz', async () => {
    try {
      await fleet.store.ping();
    } catch (err) {
      throw new FleetError('FLEETD_ERR_STORE_UNAVAILABLE', `the store is not reachable: ${(err as Error).message}`);
    }
    const pool = fleet.store.poolStats?.();
    return { status: 'ready', store: fleet.store.driver, ...(pool ? { pool } : {}) };
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
