import Ajv from 'ajv';
import addFormats from 'ajv-formats';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { Redis } from 'ioredis';
import { cacheNamespace } from '../cache/namespace.js';
import { ResponseCache } from '../cache/response-cache.js';
import type { FleetdConfig } from '../config.js';
import type { Dependencies } from '../domain/dependencies.js';
import { FleetError, isDependencyUnavailable, type ErrorCode } from '../domain/errors.js';
import type { Fleet } from '../core/fleet.js';
import { gatewayRoutes } from './gateway/gateway.js';
import { RateLimits } from '../limits/rate-limits.js';
import { AuthFailureLimiter } from '../limits/auth-failures.js';
import { cachePlugin } from './cached-reply.js';
import { clientErrorHandler, httpPlugin, requestId } from './http.js';
import { metricsPlugin } from './metrics.js';
import { tracingPlugin } from './tracing.js';
import { openApiPlugin } from './openapi.js';
import { rateLimitPlugin } from './rate-limits.js';
import { agentRoutes } from './routes/agents.js';
import { keyRoutes } from './routes/keys.js';
import { namespaceRoutes } from './routes/namespaces.js';
import { NamespaceQuotaGuard } from './quotas.js';
import { namespaceHeaderPlugin } from './namespaces.js';
import { auditRoutes } from './routes/audit.js';
import { auditPlugin } from './audit.js';
import { authPlugin } from './auth.js';
import type { Pipelines } from '../pipelines/pipelines.js';
import type { NlpPool } from '../nlp/nlp-pool.js';
import { intakeRoutes } from './routes/intake.js';
import { DASHBOARD_DIR, dashboardRoutes } from './dashboard.js';
import { lazyRequestLogger } from './request-logger.js';
import { closeQuietConnectionsOnClose } from './quiet-connections.js';
import { securityHeadersPlugin } from './security-headers.js';
import { lockRoutes } from './routes/locks.js';
import { pipelineRoutes } from './routes/pipelines.js';
import { pipelineDefinitionRoutes } from './routes/pipeline-definitions.js';
import { approvalRoutes } from './routes/approvals.js';
import { systemRoutes } from './routes/system.js';
import { taskRoutes } from './routes/tasks.js';
import { taskBatchRoutes } from './routes/task-batch.js';
import { activityRoutes } from './routes/activity.js';
import { taskStreamRoutes } from './routes/task-stream.js';
import { scheduleRoutes } from './routes/schedules.js';
import { typeRoutes } from './routes/types.js';
import { taskReleaseRoutes } from './routes/task-release.js';

export interface AppOptions {
  fleet: Fleet;
  config: Readonly<FleetdConfig>;
  /** A pino logger to share, or false for none. */
  logger: FastifyBaseLogger | false;
  /** Pipelines and their providers; without them the /v1/pipelines routes are absent. */
  pipelines?: Pipelines;
  /** The NLP worker pool; without it POST /v1/intake is absent. */
  nlp?: NlpPool;
  /** Shared Redis for the L2 cache and rate limits, when FLEETD_REDIS_URL is set; the caller closes it. */
  redis?: Redis;
  /** Whether PostgreSQL and Redis are reachable, for /readyz and /metrics. */
  dependencies?: Dependencies;
  /** The certificate and key (PEM) to serve HTTPS and WSS with; plain HTTP without. */
  tls?: { cert: Buffer; key: Buffer };
}

export type App = FastifyInstance<
  import('node:http').Server,
  import('node:http').IncomingMessage,
  import('node:http').ServerResponse,
  FastifyBaseLogger,
  TypeBoxTypeProvider
>;

/**
 * Two validators: bodies are checked strictly (a "5" is not a number, an unknown field is an error,
 * never silently dropped), while query strings and path parameters, which are always text, are
 * coerced to the types their schemas name.
 */
function validators() {
  const strict = { strict: false, removeAdditional: false, useDefaults: true, allErrors: false } as const;
  const body = new Ajv.default({ ...strict, coerceTypes: false });
  const text = new Ajv.default({ ...strict, coerceTypes: 'array' });
  addFormats.default(body);
  addFormats.default(text);
  return { body, text };
}

/** The methods a 405's Allow header may list. */
const HTTP_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'] as const;

function errorBody(code: ErrorCode, message: string, details: Record<string, unknown> = {}) {
  return { error: { code, message, details } };
}

/** Every error leaves as {"error": {code, message, details}} with the status its code carries. */
function toErrorReply(err: FastifyError & { validationContext?: string }, request: FastifyRequest): { status: number; body: ReturnType<typeof errorBody> } {
  if (err instanceof FleetError) return { status: err.status, body: err.toJSON() };
  if (err.validation) {
    const first = err.validation[0];
    const location = err.validationContext ?? 'body';
    const missing = (first?.params as { missingProperty?: string } | undefined)?.missingProperty;
    const extra = (first?.params as { additionalProperty?: string } | undefined)?.additionalProperty;
    const path = `${first?.instancePath ?? ''}${missing ? `/${missing}` : ''}${extra ? `/${extra}` : ''}`;
    const field = `${location}${path.replaceAll('/', '.')}`;
    const reason = extra ? 'is not a known field' : (first?.message ?? 'is invalid');
    return {
      status: 400,
      body: errorBody('FLEETD_ERR_VALIDATION', `${field} ${reason}`, {
        field,
        location,
        keyword: first?.keyword,
        params: first?.params,
      }),
    };
  }
  const status = err.statusCode ?? 500;
  if (err.code === 'FST_ERR_MAX_PARAM_LENGTH') {
    return { status, body: errorBody('FLEETD_ERR_URI_TOO_LONG', 'a path parameter is longer than 100 characters', { code: err.code }) };
  }
  if (status === 413) {
    const limitBytes = request.routeOptions.bodyLimit;
    const sentBytes = Number(request.headers['content-length']) || undefined;
    return {
      status,
      body: errorBody('FLEETD_ERR_BODY_TOO_LARGE', `the request body${sentBytes ? ` (${sentBytes} bytes)` : ''} is over this route's limit of ${limitBytes} bytes`, {
        code: err.code,
        limitBytes,
        ...(sentBytes ? { sentBytes } : {}),
      }),
    };
  }
  if (status === 415) {
    return {
      status,
      body: errorBody('FLEETD_ERR_UNSUPPORTED_MEDIA_TYPE', 'send JSON with content-type: application/json', { code: err.code }),
    };
  }
  if (status === 400 && (err.code?.startsWith('FST_ERR_CTP') || err.name === 'SyntaxError' || err.code === undefined)) {
    return { status, body: errorBody('FLEETD_ERR_MALFORMED_JSON', `the request body is not valid JSON: ${err.message}`) };
  }
  if (status >= 400 && status < 500) {
    return { status, body: errorBody('FLEETD_ERR_VALIDATION', err.message, { code: err.code }) };
  }
  return { status: 500, body: errorBody('FLEETD_ERR_INTERNAL', 'internal error; it has been logged') };
}

/** Errors from routes and hooks, and those the router meets before any route (a bad or over-long path). */
function sendError(err: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  const { status, body } = toErrorReply(err, request);
  // A dependency's outage is logged once by its connection, not once per request it refuses.
  if (status >= 500 && !isDependencyUnavailable(err)) request.log.error({ err }, 'request failed');
  const retryAfter = body.error.details.retryAfterSeconds;
  if (typeof retryAfter === 'number') void reply.header('retry-after', retryAfter);
  void reply.status(status).send(body);
}

export async function buildApp(options: AppOptions): Promise<App> {
  const app = Fastify({
    ...(options.logger ? { loggerInstance: options.logger } : { logger: false }),
    ...(options.tls ? { https: options.tls } : {}),
    bodyLimit: options.config.maxPayloadBytes + 64 * 1024,
    keepAliveTimeout: 72_000,
    // Long-polls hold a request open for up to maxClaimWaitMs.
    requestTimeout: Math.max(options.config.maxClaimWaitMs, options.config.maxTaskWaitMs) + 30_000,
    return503OnClosing: true,
    genReqId: requestId,
    clientErrorHandler,
    frameworkErrors: sendError,
    // Per-request log lines would cost more than the requests; slow requests are logged instead.
    logController: new LogController({ disableRequestLogging: true }),
    childLoggerFactory: lazyRequestLogger,
    // An https.Server is an http.Server to everything fleetd does with it (routes, upgrades, closing).
  }).withTypeProvider<TypeBoxTypeProvider>() as unknown as App;
  // Without this a connection that never sent a request held app.close() for about 70 s.
  closeQuietConnectionsOnClose(app.server, options.tls !== undefined);

  // Only JSON is accepted: a text/plain body is a client error (415), not a string to validate.
  app.removeContentTypeParser('text/plain');
  const { body, text } = validators();
  app.setValidatorCompiler(({ schema, httpPart }) => (httpPart === 'body' ? body : text).compile(schema));

  app.setErrorHandler(sendError);
  app.setNotFoundHandler((request, reply) => {
    const path = request.url.split('?')[0];
    const allowed = HTTP_METHODS.filter((method) => app.findRoute({ method, url: path }) !== null);
    if (allowed.length > 0) {
      void reply
        .status(405)
        .header('allow', allowed.join(', '))
        .send(errorBody('FLEETD_ERR_METHOD_NOT_ALLOWED', `${path} does not take ${request.method}; it takes ${allowed.join(', ')}`, { allowed }));
      return;
    }
    void reply.status(404).send(errorBody('FLEETD_ERR_NOT_FOUND', `no route ${request.method} ${path}`));
  });

  const { fleet, config, redis, dependencies } = options;
  const cache = config.cacheMaxEntries === 0
    ? undefined
    : new ResponseCache({
        maxEntries: config.cacheMaxEntries,
        maxBytes: config.cacheMaxBytes,
        ttlMs: config.cacheTtlMs,
        staleMs: config.cacheStaleMs,
        redis,
        namespace: cacheNamespace(config),
        log: app.log,
      });
  // Plugins that hook every route register before the routes.
  await app.register(tracingPlugin);
  await app.register(httpPlugin, { config });
  await app.register(securityHeadersPlugin, { dashboardDir: DASHBOARD_DIR, https: options.tls !== undefined });
  const failures = config.authFailuresPerMinute === 0 ? undefined : new AuthFailureLimiter(config.authFailuresPerMinute, { redis, prefix: config.redisPrefix });
  await app.register(authPlugin, { credentials: fleet.credentials, enabled: config.auth === 'on', failures });
  await app.register(namespaceHeaderPlugin);
  await app.register(rateLimitPlugin, { limits: new RateLimits(config, redis) });
  await app.register(openApiPlugin);
  await app.register(auditPlugin, { audit: fleet.audit });
  if (config.metrics === 'on') await app.register(metricsPlugin, { fleet, cache, providers: options.pipelines?.providers, dependencies });
  if (cache) await app.register(cachePlugin, { cache, fleet, dataDir: config.dataDir });

  const quotas = new NamespaceQuotaGuard(fleet, { redis, prefix: config.redisPrefix });
  const deps = { fleet, config, cache, dependencies, quotas };
  await app.register(systemRoutes, { ...deps, redis });
  await app.register(agentRoutes, { ...deps, prefix: '/v1' });
  await app.register(taskRoutes, { ...deps, prefix: '/v1' });
  await app.register(taskBatchRoutes, { ...deps, prefix: '/v1' });
  await app.register(activityRoutes, { ...deps, prefix: '/v1' });
  await app.register(taskStreamRoutes, { ...deps, prefix: '/v1' });
  await app.register(lockRoutes, { ...deps, prefix: '/v1' });
  await app.register(scheduleRoutes, { ...deps, prefix: '/v1' });
  await app.register(keyRoutes, { ...deps, prefix: '/v1' });
  await app.register(namespaceRoutes, { ...deps, prefix: '/v1' });
  await app.register(auditRoutes, { ...deps, prefix: '/v1' });
  await app.register(gatewayRoutes, { ...deps, prefix: '/v1' });
  await app.register(typeRoutes, { ...deps, prefix: '/v1' });
  await app.register(taskReleaseRoutes, { ...deps, prefix: '/v1' });
  if (options.pipelines) await app.register(pipelineRoutes, { pipelines: options.pipelines, prefix: '/v1' });
  if (options.pipelines) await app.register(pipelineDefinitionRoutes, { pipelines: options.pipelines, prefix: '/v1' });
  if (options.pipelines) await app.register(approvalRoutes, { pipelines: options.pipelines, fleet, prefix: '/v1' });
  if (options.nlp) await app.register(intakeRoutes, { fleet: options.fleet, nlp: options.nlp, prefix: '/v1' });
  await app.register(dashboardRoutes, deps);
  return app;
}
