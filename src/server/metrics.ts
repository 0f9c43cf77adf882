import type { onResponseHookHandler } from 'fastify';
import fp from 'fastify-plugin';
import type { ResponseCache } from '../cache/response-cache.js';
import type { Dependencies } from '../domain/dependencies.js';
import type { Fleet } from '../core/fleet.js';
import { httpRequestDuration, observeCache, observeDependencies, observeFleet, observeProviders } from '../metrics/metrics.js';
import type { ProviderRegistry } from '../providers/registry.js';
import { registry, scrape } from '../metrics/registry.js';
import { requireEveryNamespace } from './namespaces.js';

/** GET /metrics in Prometheus text format, and a latency observation for every request. */
export const metricsPlugin = fp<{ fleet: Fleet; cache?: ResponseCache; providers?: ProviderRegistry; dependencies?: Dependencies }>(
  async (app, { fleet, cache, providers, dependencies }) => {
  // Each route's hook knows its pattern: request.routeOptions builds an object of a dozen fields on
  // every read, a tenth of what the metrics cost a heartbeat.
  const observer = (route: string): onResponseHookHandler => (request, reply, done) => {
    httpRequestDuration.observe({ method: request.method, route, status_code: reply.statusCode }, reply.elapsedTime / 1000);
    done();
  };
  app.addHook('onRoute', (route) => {
    const existing = route.onResponse === undefined ? [] : Array.isArray(route.onResponse) ? route.onResponse : [route.onResponse];
    route.onResponse = [...existing, observer(route.url)];
  });
  const unmatched = observer('unmatched');
  app.addHook('onResponse', (request, reply, done) => (request.is404 ? unmatched.call(app, request, reply, done) : done()));

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
