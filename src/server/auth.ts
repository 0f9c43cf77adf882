import fp from 'fastify-plugin';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { scopeCovers, type CredentialService, type Principal } from '../core/credentials.js';
import { FleetError } from '../domain/errors.js';
import type { Scope } from '../domain/types.js';
import { ErrorBody } from '../domain/wire.js';
import type { AuthFailureLimiter } from '../limits/auth-failures.js';
import { hookList } from './route-hooks.js';

/**
 * Who may call a route: anyone (`public`), an API key of at least that scope, or `agent`: the agent
 * the request acts for, with its own token (or an admin key, which may act for any agent).
 * `submit-or-agent`: a submit key, or any agent's token; the route decides what the agent may do
 * (an approval step names the agents that may decide it).
 */
export type Access = 'public' | Scope | 'agent' | 'submit-or-agent';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Defaults: public outside /v1 (but /metrics is read), read for GET and HEAD under /v1, submit for the rest. */
    access?: Access;
    /** For `agent` routes: the agent the request acts for, read once params, query and body are validated. */
    actsFor?: (request: FastifyRequest) => string | undefined;
    /** WebSocket routes also take the credential as ?token=, since browsers cannot set headers on one. */
    tokenInQuery?: boolean;
  }
  interface FastifyRequest {
    /** Who the request speaks for; undefined on public routes and when auth is off. */
    principal?: Principal;
  }
}

const unauthorized = (message: string) => new FleetError('FLEETD_ERR_UNAUTHORIZED', message);
const forbidden = (message: string, details: Record<string, unknown>) => new FleetError('FLEETD_ERR_FORBIDDEN', message, details);

function accessOf(url: string, method: string | string[], config: { access?: Access } | undefined): Access {
  if (config?.access) return config.access;
  if (url === '/metrics') return 'read';
  if (!url.startsWith('/v1/')) return 'public';
  const methods = Array.isArray(method) ? method : [method];
  return methods.every((m) => m === 'GET' || m === 'HEAD') ? 'read' : 'submit';
}

/** The secret of an `Authorization: Bearer <secret>` header; undefined when the header is malformed. */
const bearerSecret = (header: string): string | undefined => /^Bearer\s+(\S+)\s*$/i.exec(header)?.[1];

function credentialOf(request: FastifyRequest): string | undefined {
  const header = request.headers.authorization;
  if (header !== undefined) {
    const secret = bearerSecret(header);
    if (secret === undefined) throw unauthorized('the Authorization header must be "Bearer <API key or agent token>"');
    return secret;
  }
  if (request.routeOptions.config?.tokenInQuery) {
    const token = (request.query as { token?: unknown } | undefined)?.token;
    if (typeof token === 'string' && token !== '') return token;
  }
  return undefined;
}

/** The name connections and budgets are counted under: the key or agent, else (auth off) the address. */
export function ownerOf(request: FastifyRequest): string {
  const p = request.principal;
  if (!p) return `ip:${request.ip}`;
  return p.kind === 'key' ? `key:${p.keyId}` : `agent:${p.agentId}`;
}

type Hook = (request: FastifyRequest, reply: FastifyReply, done: (err?: Error) => void) => void;

/**
 * Authentication and authorisation for every route, chosen once per route when it is added:
 * a missing or unknown credential gets 401, a known one without the right gets 403 — before the
 * body is read where the route alone decides, after validation where the agent named in the
 * request does. With auth off nothing is checked (and the server says so loudly at start).
 */
export const authPlugin = fp<{ credentials: CredentialService; enabled: boolean; failures?: AuthFailureLimiter }>(async (app, { credentials, enabled, failures }) => {
  if (!enabled) return;

  /** A wrong credential counts against its address; the one that uses up the budget is logged, once per burst. */
  const failed = async (request: FastifyRequest, err: FleetError): Promise<FleetError> => {
    if (!failures) return err;
    const count = await failures.fail(request.ip);
    if (count.burstStarted) {
      request.log.warn(
        { address: request.ip, failures: count.failures, retryAfterSeconds: count.retryAfterSeconds },
        `${count.failures} failed authentications from ${request.ip} within a minute: its requests are refused for ${count.retryAfterSeconds} s`,
      );
    }
    return err;
  };

  /** A 403 when the principal may not call a route of this access; undefined when it may. */
  const refusal = (principal: Principal, access: Exclude<Access, 'public'>): FleetError | undefined => {
    if (principal.kind === 'agent') {
      if (access === 'agent' || access === 'submit-or-agent') return undefined;
      return forbidden('an agent token acts only for its own agent: claims, leases, locks, heartbeats, its stream, and approvals that name it', {
        needs: access,
        agentId: principal.agentId,
      });
    }
    const needs: Scope = access === 'agent' ? 'admin' : access === 'submit-or-agent' ? 'submit' : access;
    if (scopeCovers(principal.scope, needs)) return undefined;
    const what = access === 'agent' ? "only the agent's own token or an admin key may act for an agent" : `this route needs a ${needs} key`;
    return forbidden(`${what}; this key's scope is ${principal.scope}`, { needs, scope: principal.scope, keyId: principal.keyId });
  };

  const authenticateFully = async (access: Exclude<Access, 'public'>, request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const blockedFor = await failures?.blockedFor(request.ip);
    if (blockedFor !== undefined) {
      throw new FleetError(
        'FLEETD_ERR_AUTH_RATE_LIMITED',
        `too many failed authentications from ${request.ip} (more than ${failures!.perMinute} in a minute); retry in ${blockedFor} s`,
        { address: request.ip, limit: failures!.perMinute, retryAfterSeconds: blockedFor },
      );
    }
    void reply.header('www-authenticate', 'Bearer realm="fleetd"');
    let secret: string | undefined;
    try {
      secret = credentialOf(request);
    } catch (err) {
      throw err instanceof FleetError ? await failed(request, err) : err;
    }
    // No credential at all is not a guess: it is not counted.
    if (secret === undefined) throw unauthorized('this route needs a credential: send "Authorization: Bearer <API key or agent token>"');
    const checked = await credentials.check(secret);
    if (!checked?.principal) {
      void reply.header('www-authenticate', 'Bearer realm="fleetd", error="invalid_token"');
      if (checked?.expired) {
        const { keyId, at, secret: which } = checked.expired;
        const when = new Date(at).toISOString();
        const message = which === 'previous'
          ? `this is the secret key ${keyId} had before it was rotated; its grace ended at ${when}: use the new secret`
          : `API key ${keyId} expired at ${when}`;
        throw await failed(request, new FleetError('FLEETD_ERR_KEY_EXPIRED', message, { keyId, expiredAt: when, rotated: which === 'previous' }));
      }
      throw await failed(request, unauthorized('the credential is not known or has been revoked'));
    }
    reply.removeHeader('www-authenticate');
    request.principal = checked.principal;
    const refused = refusal(checked.principal, access);
    if (refused) throw refused;
  };

  /**
   * Most requests carry a well-formed credential this node has seen lately, from an address that has
   * not failed: those are answered at once, without a promise (a heartbeat's authentication cost
   * three awaits and a header set and removed). Anything else takes the full path above.
   */
  const authenticate = (access: Exclude<Access, 'public'>): Hook => (request, reply, done) => {
    const header = request.headers.authorization;
    const secret = header !== undefined && !failures?.mayBeBlocked(request.ip) ? bearerSecret(header) : undefined;
    const principal = secret === undefined ? undefined : credentials.cachedPrincipal(secret);
    if (principal === undefined) {
      authenticateFully(access, request, reply).then(() => done(), done);
      return;
    }
    request.principal = principal;
    done(refusal(principal, access));
  };

  const ownAgentOnly = (actsFor: (request: FastifyRequest) => string | undefined): Hook => (request, _reply, done) => {
    const p = request.principal;
    if (p?.kind !== 'agent') return done();
    const named = actsFor(request);
    if (named !== undefined && named !== p.agentId) {
      return done(forbidden(`this agent token belongs to agent ${p.agentId}, not ${named}`, { agentId: p.agentId, actsFor: named }));
    }
    done();
  };

  app.addHook('onRoute', (route) => {
    const config = route.config as { access?: Access; actsFor?: (request: FastifyRequest) => string | undefined } | undefined;
    const access = accessOf(route.url, route.method, config);
    if (access === 'public') return;
    const add = (existing: unknown, hook: Hook) => [hook, ...hookList(existing)];
    route.onRequest = add(route.onRequest, authenticate(access)) as typeof route.onRequest;
    const response = route.schema?.response as Record<string, unknown> | undefined;
    if (route.schema && response) route.schema = { ...route.schema, response: { 401: ErrorBody, 403: ErrorBody, ...response } };
    // For the API document: the operation needs the bearer credential (openapi.ts declares the scheme).
    if (route.schema) route.schema = { ...route.schema, security: [{ bearer: [] }] };
    if (access === 'agent') {
      if (!config?.actsFor) throw new Error(`route ${route.method} ${route.url} is for agents but does not say which agent it acts for`);
      route.preHandler = add(route.preHandler, ownAgentOnly(config.actsFor)) as typeof route.preHandler;
    }
  });
});
