import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
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
 * Security headers on every answer, from helmet: the policy above, X-Frame-Options DENY (for
 * browsers without frame-ancestors), X-Content-Type-Options nosniff, Referrer-Policy no-referrer (a
 * dashboard address can carry a task id; it stays here), and Strict-Transport-Security only when
 * fleetd itself serves HTTPS (over plain HTTP browsers ignore it, and a proxy in front that
 * terminates TLS sets its own). helmet's middleware is built once, here: @fastify/helmet built it
 * again for every request, parsing the policy each time, which cost the hot routes a tenth of their
 * CPU. Headers a route sets itself (the docs' wider style-src) still win, as writeHead's do.
 */
export const securityHeadersPlugin = fp<{ dashboardDir: string; https: boolean }>(async (app, { dashboardDir, https }) => {
  const apply = helmet({
    contentSecurityPolicy: { useDefaults: false, directives: contentSecurityPolicy(inlineScriptHashes(dashboardDir)) },
    frameguard: { action: 'deny' },
    referrerPolicy: { policy: 'no-referrer' },
    strictTransportSecurity: https ? { maxAge: 31_536_000 } : false,
  });
  app.addHook('onRequest', (request, reply, done) => apply(request.raw, reply.raw, (err) => done(err as Error | undefined)));
});
