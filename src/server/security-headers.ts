import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import helmet from 'helmet';
import fp from 'fastify-plugin';

/**
 * The hashes ('sha256-…') of the inline scripts of the built dashboard's index.html. The build
 * writes one (it preloads the overview's chunk before the entry script has run, see
 * web/vite.config.ts); allowing exactly that script by its hash keeps the policy free of
 * 'unsafe-inline', so an injected script still does not run. Read from the file that is served,
 * so a rebuild never leaves the policy behind.
 */
export function inlineScriptHashes(dashboardDir: string): string[] {
  const index = join(dashboardDir, 'index.html');
  if (!existsSync(index)) return [];
  const html = readFileSync(index, 'utf8');
  const hashes: string[] = [];
  for (const match of html.matchAll(/<script(?![^>]*\bsrc=)[^>]*>([\s\S]*?)<\/script>/g)) {
    hashes.push(`'sha256-${createHash('sha256').update(match[1]).digest('base64')}'`);
  }
  return hashes;
}

/**
 * The Content-Security-Policy of every answer: the dashboard's own scripts, styles, images and API
 * (WebSockets to the same host are 'self' too), nothing from elsewhere, no plugins, never framed.
 */
export function contentSecurityPolicy(scriptHashes: readonly string[]): Record<string, string[]> {
  return {
    defaultSrc: ["'self'"],
    baseUri: ["'self'"],
    scriptSrc: ["'self'", ...scriptHashes],
    scriptSrcAttr: ["'none'"],
    styleSrc: ["'self'"],
    // The dashboard's favicon is an empty data: URL (no request for /favicon.ico).
    imgSrc: ["'self'", 'data:'],
    fontSrc: ["'self'"],
    connectSrc: ["'self'"],
    objectSrc: ["'none'"],
    formAction: ["'self'"],
    frameAncestors: ["'none'"],
  };
}

/**
 * Security headers on every answer, worked out once by helmet. The pages (the dashboard, its
 * assets, /docs) get the policy above, X-Frame-Options DENY (for browsers without
 * frame-ancestors), X-Content-Type-Options nosniff, Referrer-Policy no-referrer (a dashboard address
 * can carry a task id; it stays here) and helmet's cross-origin isolation headers. The API's JSON
 * answers (`/v1/…`) are never rendered: they get what a browser that opens one needs, as OWASP
 * advises for REST APIs (a policy that allows nothing and no framing, nosniff, no referrer), a quarter
 * of the bytes on the routes agents call many times a second. Strict-Transport-Security only when
 * fleetd itself serves HTTPS (over plain HTTP browsers ignore it, and a proxy in front that
 * terminates TLS sets its own).
 *
 * Each header costs its checks (most of a response's 2.8 µs of headers); helmet's chain of
 * middlewares per request added about 0.4 µs more, and @fastify/helmet, which also parsed the
 * policy each time, a tenth of the hot routes' CPU. Headers a route sets itself (the docs' wider
 * style-src) still win, being set later. A hijacked reply (the task stream) sends them itself.
 */
export const securityHeadersPlugin = fp<{ dashboardDir: string; https: boolean }>(async (app, { dashboardDir, https }) => {
  const strictTransportSecurity = https ? { maxAge: 31_536_000 } : false;
  const pages = helmetHeaders(
    helmet({
      contentSecurityPolicy: { useDefaults: false, directives: contentSecurityPolicy(inlineScriptHashes(dashboardDir)) },
      frameguard: { action: 'deny' },
      referrerPolicy: { policy: 'no-referrer' },
      strictTransportSecurity,
    }),
  );
  const api = helmetHeaders(
    helmet({
      contentSecurityPolicy: { useDefaults: false, directives: { defaultSrc: ["'none'"], frameAncestors: ["'none'"] } },
      frameguard: { action: 'deny' },
      referrerPolicy: { policy: 'no-referrer' },
      strictTransportSecurity,
      crossOriginOpenerPolicy: false,
      crossOriginResourcePolicy: false,
      originAgentCluster: false,
      xDnsPrefetchControl: false,
      xDownloadOptions: false,
      xPermittedCrossDomainPolicies: false,
      xXssProtection: false,
    }),
  );
  // Fastify's headers, not the raw response's: once one header is set on the raw response, Node
  // validates each of Fastify's twice (setHeader, then writeHead), a microsecond on a heartbeat.
  const apiHeaders = Object.fromEntries(api);
  const pageHeaders = Object.fromEntries(pages);
  app.addHook('onRequest', (request, reply, done) => {
    void reply.headers(request.url.startsWith('/v1/') ? apiHeaders : pageHeaders);
    done();
  });
});

/** The headers helmet sets, found by running it once on a response that records them: they never depend on the request. */
function helmetHeaders(middleware: ReturnType<typeof helmet>): [string, string][] {
  const headers: [string, string][] = [];
  const recorder = {
    setHeader: (name: string, value: string) => headers.push([name, String(value)]),
    removeHeader: () => {},
  };
  let failed: unknown;
  middleware({} as IncomingMessage, recorder as unknown as ServerResponse, (err?: unknown) => {
    failed = err;
  });
  if (failed) throw failed;
  return headers;
}
