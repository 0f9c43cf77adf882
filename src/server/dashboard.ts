import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import fastifyStatic from '@fastify/static';
import { FleetError } from '../domain/errors.js';
import type { Routes } from './routes/deps.js';

/**
 * Where `npm run build` puts the dashboard (web/ built by Vite). The same from src/server (tests,
 * tsx) and dist/server (npm start): both are two levels below the package root.
 */
export const DASHBOARD_DIR = fileURLToPath(new URL('../../dist/web/', import.meta.url));

/** A year: the longest lifetime caches honour; asset names change with their content. */
const HASHED_ASSET_CACHE = 'public, max-age=31536000, immutable';

/**
 * Serves the dashboard at `/`: hashed assets under /assets/ are cached for good, index.html never,
 * so a new build is picked up on the next load. Assets are sent precompressed (.br, .gz written by
 * the build) when the browser accepts it.
 */
export const dashboardRoutes: Routes = async (app) => {
  if (!existsSync(join(DASHBOARD_DIR, 'index.html'))) {
    app.get('/', async () => {
      throw new FleetError('FLEETD_ERR_DASHBOARD_NOT_BUILT', 'the dashboard is not built; run `npm run build`', {
        dir: DASHBOARD_DIR,
      });
    });
    return;
  }
  await app.register(fastifyStatic, {
    root: DASHBOARD_DIR,
    prefix: '/',
    // Routes for the files the build wrote, rather than a catch-all that would shadow API 404s.
    wildcard: false,
    preCompressed: true,
    // Nothing here calls reply.sendFile; leaving the decorator free lets another plugin register
    // @fastify/static with its defaults without a "decorator already present" error.
    decorateReply: false,
    cacheControl: false,
    setHeaders(reply, path) {
      reply.header('cache-control', path.startsWith(join(DASHBOARD_DIR, 'assets')) ? HASHED_ASSET_CACHE : 'no-store');
    },
  });
};
