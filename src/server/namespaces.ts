import fp from 'fastify-plugin';
import type { FastifyRequest } from 'fastify';
import { ALL_NAMESPACES, DEFAULT_NAMESPACE, NAMESPACE_PATTERN, isNamespaceName, namespaceVisible, type NamespaceFilter } from '../domain/namespaces.js';
import { FleetError, invalid, notFound } from '../domain/errors.js';

/**
 * Which namespace a request acts in, from who sends it (request.principal, set by the auth plugin)
 * and the `namespace` it names in its body or query, if any. Every route that reads or writes
 * namespaced things asks here; nothing else decides it.
 *
 * - An agent's token acts in the agent's own namespace, always; naming another is a 404.
 * - A key scoped to one namespace acts in it without saying so.
 * - A key scoped to several must name one to write; it reads all of them unless it names one.
 * - A `*` key (and every request when auth is off) writes to `default` unless it names one, and
 *   reads every namespace unless it names one.
 * - A namespace the key does not reach answers 404, exactly as a namespace that does not exist.
 *
 * A request may also name its namespace with the `Fleetd-Namespace` header, which the SDKs send on
 * every request of a client made for one namespace; `namespace` in the body or query, where given,
 * must agree with it.
 */

export const NAMESPACE_HEADER = 'fleetd-namespace';

/** The namespace the request names: `namespace` in its body or query, else its Fleetd-Namespace header. */
function namedBy(request: FastifyRequest, named: string | undefined): string | undefined {
  const header = request.headers[NAMESPACE_HEADER];
  if (header === undefined) return named;
  if (typeof header !== 'string' || !isNamespaceName(header)) {
    throw invalid(NAMESPACE_HEADER, `the ${NAMESPACE_HEADER} header must be one namespace's name (${NAMESPACE_PATTERN})`);
  }
  if (named !== undefined && named !== header) {
    throw invalid('namespace', `names ${named}, but the ${NAMESPACE_HEADER} header names ${header}: give one, or the same`, { header });
  }
  return header;
}

/** The namespaces the request's credential reaches: undefined for all. */
function reach(request: FastifyRequest): NamespaceFilter {
  const p = request.principal;
  if (!p) return undefined;
  if (p.kind === 'agent') return [p.namespace];
  return p.namespaces.includes(ALL_NAMESPACES) ? undefined : p.namespaces;
}

const namespaceNotFound = (name: string) => notFound('namespace', name);

/** The namespaces a read may return: the one named (404 when out of reach), else all the credential reaches. */
export function readNamespaces(request: FastifyRequest, explicit?: string): NamespaceFilter {
  const named = namedBy(request, explicit);
  const reached = reach(request);
  if (named === undefined) return reached;
  if (!namespaceVisible(reached, named)) throw namespaceNotFound(named);
  return [named];
}

/** The one namespace a write goes to (see the rules above). */
export function writeNamespace(request: FastifyRequest, explicit?: string): string {
  const named = namedBy(request, explicit);
  const reached = reach(request);
  if (named !== undefined) {
    if (!namespaceVisible(reached, named)) throw namespaceNotFound(named);
    return named;
  }
  if (reached === undefined) return DEFAULT_NAMESPACE;
  if (reached.length === 1) return reached[0]!;
  throw new FleetError('FLEETD_ERR_VALIDATION', `namespace: this key reaches several namespaces (${reached.join(', ')}); name the one to write to`, {
    field: 'namespace',
    namespaces: reached,
  });
}

/**
 * Throws the 404 of `what` when a resource the request found by id lies in a namespace out of its
 * reach — the same answer as for an id that does not exist, so that nothing confirms it does.
 */
export function assertVisible(request: FastifyRequest, namespace: string, what: string, id: string | number): void {
  if (!namespaceVisible(reach(request), namespace)) throw notFound(what, id);
}

/**
 * Refuses (403) what spans every namespace — quotas, the audit log, /metrics — to a credential that
 * does not reach them all. The same answer for every name: it confirms nothing.
 */
export function requireEveryNamespace(request: FastifyRequest, what: string): void {
  if (reach(request) !== undefined) {
    throw new FleetError('FLEETD_ERR_FORBIDDEN', `${what} with a key that reaches every namespace ("*")`, { namespaces: [ALL_NAMESPACES] });
  }
}

/** True when the request's credential reaches every one of `namespaces` (`*` among them: only a credential that reaches all). */
export function reachesAll(request: FastifyRequest, namespaces: readonly string[]): boolean {
  const reached = reach(request);
  return reached === undefined || namespaces.every((n) => n !== ALL_NAMESPACES && reached.includes(n));
}

/**
 * What a cached answer is filed under besides its URL: the namespaces the credential reaches and the
 * one its header names, so that an answer computed for one reach (a list, a task of another
 * namespace) is never served to another. Empty for a credential that reaches all and names none, so
 * that the common case keeps plain URLs (and warm-up).
 */
export function cachePartition(request: FastifyRequest): string {
  const reached = reach(request);
  const header = request.headers[NAMESPACE_HEADER];
  if (reached === undefined && header === undefined) return '';
  return `ns:${reached === undefined ? ALL_NAMESPACES : [...reached].sort().join(',')}:${String(header ?? '')}|`;
}

/**
 * A Fleetd-Namespace header out of the credential's reach is a 404 on every route, those that read
 * or write no namespace of their own too (an agent's heartbeat, claim or stream sent with another
 * namespace's name): a request never acts while naming a namespace it may not see. Runs after
 * authentication, before the body is validated.
 */
export const namespaceHeaderPlugin = fp(async (app) => {
  // A callback, not an async hook, which costs every request a promise (few carry the header). What
  // readNamespaces throws, Fastify's hook runner answers.
  app.addHook('preValidation', (request, _reply, done) => {
    if (request.headers[NAMESPACE_HEADER] !== undefined && request.principal) readNamespaces(request);
    done();
  });
});
