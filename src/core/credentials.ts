import { hash, randomBytes } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { FleetContext } from './context.js';
import { FleetError, invalid, notFound } from '../domain/errors.js';
import { ALL_NAMESPACES, NAMESPACE_PATTERN, isNamespaceName } from '../domain/namespaces.js';
import { SCOPES, type ApiKey, type Scope } from '../domain/types.js';
import { keyExpired, secretValidUntil } from './rules/keys.js';

/**
 * Who a request speaks for: an API key with its scope and the namespaces it reaches (`*`: all), or
 * one agent with its own token, in the namespace it registered in.
 */
export type Principal = { kind: 'key'; keyId: string; scope: Scope; namespaces: readonly string[] } | { kind: 'agent'; agentId: string; namespace: string };

/** API keys and agent tokens say what they are, so that a leaked one is recognisable (and greppable). */
export const API_KEY_PREFIX = 'fk_';
export const AGENT_TOKEN_PREFIX = 'fla_';

/** Secrets are random (192–256 bits), so a fast hash is safe to store; a slow one would cost every request. */
export const hashSecret = (secret: string): string => hash('sha256', secret, 'hex');

export const newApiKeySecret = (): string => `${API_KEY_PREFIX}${randomBytes(32).toString('base64url')}`;

/** A key's namespaces, checked: each a namespace's name, or `*` alone; duplicates dropped. */
function keyNamespaces(names: readonly string[]): string[] {
  const unique = [...new Set(names)];
  if (unique.length === 0) throw invalid('namespaces', 'a key reaches at least one namespace (["*"] for all)');
  for (const name of unique) {
    if (name !== ALL_NAMESPACES && !isNamespaceName(name)) throw invalid('namespaces', `"${name}" is not a namespace's name (${NAMESPACE_PATTERN})`, { namespace: name });
  }
  if (unique.includes(ALL_NAMESPACES) && unique.length > 1) throw invalid('namespaces', '"*" already reaches every namespace: give it alone');
  return unique;
}

/** True when `has` includes everything `needs` allows: admin ⊃ submit ⊃ read. */
export const scopeCovers = (has: Scope, needs: Scope): boolean => SCOPES.indexOf(has) >= SCOPES.indexOf(needs);

/**
 * What a secret is: the principal it speaks for; an API key's secret that no longer works (the key
 * expired, or this was its secret before a rotation and the grace is over); or nothing known.
 */
export type SecretCheck =
  | { principal: Principal; expired?: undefined }
  | { principal?: undefined; expired: { keyId: string; at: number; secret: 'current' | 'previous' } }
  | undefined;

export interface CreatedKey {
  key: ApiKey;
  /** The secret, shown once: only its hash is stored. */
  secret: string;
}

/** The server's requests to itself (see internalReadKey). */
const INTERNAL_PRINCIPAL: Principal = { kind: 'key', keyId: 'internal', scope: 'read', namespaces: [ALL_NAMESPACES] };

/**
 * API keys (created, listed, revoked) and the lookup of the principal behind a secret. Lookups are
 * cached for a short while so that a request costs one hash, not a query; revoking a key or deleting
 * an agent takes effect at once on this node and within `cacheTtlMs` on the others.
 */
export class CredentialService {
  static readonly cacheTtlMs = 30_000;
  /** Principals by secret hash, each with the moment its secret stops working (null: never). */
  private readonly principals = new LRUCache<string, { principal: Principal; validUntil: number | null }>({ max: 50_000, ttl: CredentialService.cacheTtlMs });
  /**
   * A read key that exists only in this process's memory, for the server's requests to itself
   * (warming the cache at start); it is never stored, printed or sent anywhere.
   */
  readonly internalReadKey = newApiKeySecret();
  private readonly internalHash = hashSecret(this.internalReadKey);

  constructor(private readonly ctx: Pick<FleetContext, 'store' | 'bus' | 'now'>) {
    ctx.bus.subscribe('agent.deleted', ({ agent }) => {
      for (const [hash, { principal }] of this.principals.entries()) {
        if (principal.kind === 'agent' && principal.agentId === agent.id) this.principals.delete(hash);
      }
    });
  }

  /** The principal behind a secret, or undefined when it is unknown, revoked, expired or malformed. */
  async authenticate(secret: string): Promise<Principal | undefined> {
    return (await this.check(secret))?.principal;
  }

  /**
   * The principal behind a secret this node has looked up lately, without a query; undefined when
   * check must be asked (a secret not cached, or one whose time is up).
   */
  cachedPrincipal(secret: string, hash = hashSecret(secret)): Principal | undefined {
    if (hash === this.internalHash) return INTERNAL_PRINCIPAL;
    const cached = this.principals.get(hash);
    if (cached && (cached.validUntil === null || this.ctx.now() < cached.validUntil)) return cached.principal;
    return undefined;
  }

  /** What a secret is (see SecretCheck). */
  async check(secret: string): Promise<SecretCheck> {
    const hash = hashSecret(secret);
    const known = this.cachedPrincipal(secret, hash);
    if (known) return { principal: known };
    const now = this.ctx.now();
    this.principals.delete(hash);
    if (secret.startsWith(API_KEY_PREFIX)) {
      const match = await this.ctx.store.apiKeyByHash({ hash });
      if (!match) return undefined;
      const validUntil = secretValidUntil(match.key, match.secret);
      if (validUntil !== null && now >= validUntil) return { expired: { keyId: match.key.id, at: validUntil, secret: match.secret } };
      const principal: Principal = { kind: 'key', keyId: match.key.id, scope: match.key.scope, namespaces: match.key.namespaces };
      this.principals.set(hash, { principal, validUntil });
      return { principal };
    }
    if (secret.startsWith(AGENT_TOKEN_PREFIX)) {
      const agent = await this.ctx.store.agentByTokenHash({ hash });
      if (agent === undefined) return undefined;
      const principal: Principal = { kind: 'agent', agentId: agent.id, namespace: agent.namespace };
      this.principals.set(hash, { principal, validUntil: null });
      return { principal };
    }
    return undefined;
  }

  /** `namespaces`: those the key reaches, default all (`*`). */
  async create(input: { name: string; scope: Scope; namespaces?: readonly string[]; secret?: string; onlyIfNone?: boolean; expiresAt?: number | null }): Promise<CreatedKey | undefined> {
    const secret = input.secret ?? newApiKeySecret();
    if (!secret.startsWith(API_KEY_PREFIX) || secret.length < API_KEY_PREFIX.length + 32) {
      throw new FleetError('FLEETD_ERR_VALIDATION', `an API key is "${API_KEY_PREFIX}" followed by at least 32 characters`, { field: 'secret' });
    }
    const now = this.ctx.now();
    if (input.expiresAt != null && input.expiresAt <= now) throw invalid('expiresAt', 'lies in the past: a key must expire later than now', { expiresAt: new Date(input.expiresAt).toISOString() });
    const namespaces = keyNamespaces(input.namespaces ?? [ALL_NAMESPACES]);
    const key = await this.ctx.store.apiKeyInsert({
      namespaces,
      id: `key_${randomBytes(8).toString('hex')}`,
      name: input.name,
      scope: input.scope,
      hash: hashSecret(secret),
      now,
      onlyIfNone: input.onlyIfNone,
      expiresAt: input.expiresAt ?? null,
    });
    return key && { key, secret };
  }

  /**
   * A first start's admin key: stored only when no key exists yet. `secret` is the operator's own
   * (FLEETD_ADMIN_KEY); without one a key is made up. Returns what was created, else undefined.
   */
  bootstrap(secret?: string): Promise<CreatedKey | undefined> {
    return this.create({ name: 'first admin key', scope: 'admin', secret, onlyIfNone: true });
  }

  list(): Promise<ApiKey[]> {
    return this.ctx.store.apiKeyList();
  }

  async revoke(id: string): Promise<ApiKey> {
    const key = await this.ctx.store.apiKeyRevoke({ id, now: this.ctx.now() });
    if (!key) throw notFound('key', id);
    this.forget(id);
    return key;
  }

  /**
   * A new secret for a live key, shown once; the one it replaces keeps working for `graceMs`, so that
   * its users can move over (one previous secret is kept: rotating again ends an earlier grace).
   * `expiresAt` moves the key's expiry (null: never); an expired key must be given a new one.
   */
  async rotate(id: string, options: { graceMs: number; expiresAt?: number | null }): Promise<CreatedKey> {
    const now = this.ctx.now();
    const current = (await this.list()).find((k) => k.id === id);
    if (!current) throw notFound('key', id);
    if (current.revokedAt !== null) throw new FleetError('FLEETD_ERR_KEY_STATE', `key ${id} was revoked: a revoked key cannot be rotated`, { key: id });
    if (options.expiresAt != null && options.expiresAt <= now) throw invalid('expiresAt', 'lies in the past: a key must expire later than now', { expiresAt: new Date(options.expiresAt).toISOString() });
    if (options.expiresAt === undefined && keyExpired(current, now)) {
      throw new FleetError('FLEETD_ERR_KEY_STATE', `key ${id} expired at ${new Date(current.expiresAt!).toISOString()}: give it a new expiresAt (or null) to rotate it`, { key: id });
    }
    const secret = newApiKeySecret();
    const key = await this.ctx.store.apiKeyRotate({ id, hash: hashSecret(secret), now, previousExpiresAt: now + options.graceMs, expiresAt: options.expiresAt });
    // Revoked between the read and the write.
    if (!key) throw new FleetError('FLEETD_ERR_KEY_STATE', `key ${id} was revoked: a revoked key cannot be rotated`, { key: id });
    // Cached lookups carry the old expiry and none of the grace: they are looked up again.
    this.forget(id);
    return { key, secret };
  }

  private forget(keyId: string): void {
    for (const [hash, { principal }] of this.principals.entries()) {
      if (principal.kind === 'key' && principal.keyId === keyId) this.principals.delete(hash);
    }
  }
}
