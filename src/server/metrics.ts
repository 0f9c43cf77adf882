import type { FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import type { ResponseCache } from '../cache/response-cache.js';
import type { Dependencies } from '../domain/dependencies.js';
import type { Fleet } from '../core/fleet.js';
import { httpRequestDuration, observeCache, observeDependencies, observeFleet, observeProviders } from '../metrics/metrics.js';
import type { ProviderRegistry } from '../providers/registry.js';
import { registry, scrape } from '../metrics/registry.js';
import { requireEveryNamespace } from './namespaces.js';
import { hookList } from './route-hooks.js';

/** GET /metrics in Prometheus text format, and a latency observation for every request. */
export const metricsPlugin = fp<{ fleet: Fleet; cache?: ResponseCache; providers?: ProviderRegistry; dependencies?: Dependencies }>(
  async (app, { fleet, cache, providers, dependencies }) => {
  const observe = (request: FastifyRequest, reply: FastifyReply, route: string) =>
    httpRequestDuration.observe({ method: request.method, route, status_code: reply.statusCode }, reply.elapsedTime / 1000);
  // Each route's own hook knows its pattern: request.routeOptions builds an object of a dozen fields
  // on every read, a tenth of what the metrics cost a heartbeat.
  app.addHook('onRoute', (route) => {
    const { url } = route;
    route.onResponse = [
      ...hookList(route.onResponse),
      (request, reply, done) => {
        observe(request, reply, url);
        done();
      },
    ];
  });
  app.addHook('onResponse', (request, reply, done) => {
    if (request.is404) observe(request, reply, 'unmatched');
    done();
  });

  const stops = [
    observeFleet(fleet),
    ...(cache ? [observeCache(cache)] : []),
    ...(providers ? [observeProviders(providers)] : []),
    ...(dependencies ? [observeDependencies(dependencies)] : []),
  ];
  app.addHook('onClose', async () => {
    for (const stop of stops) stop();
  });

  app.get('/metrics', { schema: { hide: true } }, async (request, reply) => {
    // The counts span every namespace (tasks by type, usage by type): not for a key of some of them.
    requireEveryNamespace(request, 'the metrics of every namespace are read');
    return reply.header('content-type', registry.contentType).send(await scrape());
  });
  },
);
