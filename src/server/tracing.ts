import { context, SpanStatusCode, type Span } from '@opentelemetry/api';
import type { FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { startServerSpan, tracingEnabled } from '../tracing/tracing.js';

const spans = new WeakMap<FastifyRequest, Span>();

/**
 * A span per HTTP request (`GET /v1/tasks/:id`: the route's pattern, never the URL), a child of
 * the caller's span when the request carries `traceparent`. Registered only while tracing is on.
 */
export const tracingPlugin = fp(async (app) => {
  if (!tracingEnabled()) return;
  app.addHook('onRequest', (request, _reply, done) => {
    const route = request.routeOptions.url ?? 'unmatched';
    const started = startServerSpan(`${request.method} ${route}`, request.headers, {
      'http.request.method': request.method,
      'http.route': route,
      'url.path': request.url.split('?')[0],
    })!;
    spans.set(request, started.span);
    // The rest of the request (hooks, handler, what they await) runs in the span's context.
    context.with(started.context, done);
  });
  app.addHook('onRequestAbort', (request, done) => {
    const span = spans.get(request);
    span?.setStatus({ code: SpanStatusCode.ERROR, message: 'the client closed the connection' });
    span?.end();
    done();
  });
  app.addHook('onResponse', (request, reply, done) => {
    const span = spans.get(request);
    if (span) {
      span.setAttribute('http.response.status_code', reply.statusCode);
      if (reply.statusCode >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
      span.end();
    }
    done();
  });
});
