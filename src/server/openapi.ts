import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import fp from 'fastify-plugin';
import { FLEETD_VERSION } from './version.js';

/** The tags every operation carries one of, in the order /docs shows them. */
export const OPENAPI_TAGS = [
  { name: 'agents', description: 'Agents register, heartbeat and receive tasks by long-poll or WebSocket' },
  { name: 'tasks', description: 'Submit, claim, complete, fail, retry and list tasks' },
  { name: 'locks', description: 'All-or-nothing locks of agents on files and resources' },
  { name: 'schedules', description: 'Recurring schedules that submit a task at each cron fire time' },
  { name: 'types', description: 'Task types: limits, rate limits and pauses that share the fleet fairly' },
  { name: 'pipelines', description: 'Durable multi-step pipelines and their runs' },
  { name: 'cases', description: 'Pipeline runs grouped by similarity' },
  { name: 'keys', description: 'API keys (admin)' },
  { name: 'namespaces', description: 'Namespaces that wall teams off from each other, and their quotas (admin)' },
  { name: 'system', description: 'Health, readiness, statistics, configuration and live events' },
] as const;

/**
 * The OpenAPI 3 document, generated from the route schemas, at /openapi.json, and the docs UI at
 * /docs. Registered before the routes so that it sees each one; the auth plugin marks the routes
 * that need the bearer credential, so that /docs has an Authorize button whose key "try it out" sends.
 */
export const openApiPlugin = fp(async (app) => {
  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: { title: 'fleetd', description: 'Orchestration server for fleets of AI agents', version: FLEETD_VERSION },
      tags: OPENAPI_TAGS.map((t) => ({ ...t })),
      components: {
        securitySchemes: {
          bearer: {
            type: 'http',
            scheme: 'bearer',
            description: 'An API key (fk_…, from the first start or `npx fleetd keys create`) or an agent token (fla_…, from its registration)',
          },
        },
      },
    },
  });
  await app.register(swaggerUi, {
    routePrefix: '/docs',
    uiConfig: { persistAuthorization: true },
    // Swagger UI writes <style> elements as it renders; its scripts stay as strict as the dashboard's.
    transformStaticCSP: (header) => header.replace(/style-src ([^;]*)/, "style-src $1 'unsafe-inline'"),
  });
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
});
