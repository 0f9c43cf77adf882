import { createHash, randomBytes } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { FleetContext } from './context.js';
import { FleetError, notFound } from '../domain/errors.js';
import { SCOPES, type ApiKey, type Scope } from '../domain/types.js';

/** Who a request speaks for: an API key with its scope, or one agent with its own token. */
export type Principal = { kind: 'key'; keyId: string; scope: Scope } | { kind: 'agent'; agentId: string };

/** API keys and agent tokens say what they are, so that a leaked one is recognisable (and greppable). */
export const API_KEY_PREFIX = 'fk_';
export const AGENT_TOKEN_PREFIX = 'fla_';

/** Secrets are random (192–256 bits), so a fast hash is safe to store; a slow one would cost every request. */
export const hashSecret = (secret: string): string => createHash('sha256').update(secret).digest('hex');

export const newApiKeySecret = (): string => `${API_KEY_PREFIX}${randomBytes(32).toString('base64url')}`;

/** True when `has` includes everything `needs` allows: admin ⊃ submit ⊃ read. */
export const scopeCovers = (has: Scope, needs: Scope): boolean => SCOPES.indexOf(has) >= SCOPES.indexOf(needs);

export interface CreatedKey {
  key: ApiKey;
  /** The secret, shown once: only its hash is stored. */
  secret: string;
}

/**
 * API keys (created, listed, revoked) and the lookup of the principal behind a secret. Lookups are
 * cached for a short while so that a request costs one hash, not a query; revoking a key or deleting
 * an agent takes effect at once on this node and within `cacheTtlMs` on the others.
 */
export class CredentialService {
  static readonly cacheTtlMs = 30_000;
  private readonly principals = new LRUCache<string, Principal>({ max: 50_000, ttl: CredentialService.cacheTtlMs });
  /**
   * A read key that exists only in this process's memory, for the server's requests to itself
   * (warming the cache at start); it is never stored, printed or sent anywhere.
   */
  readonly internalReadKey = newApiKeySecret();
  private readonly internalHash = hashSecret(this.internalReadKey);

  constructor(private readonly ctx: Pick<FleetContext, 'store' | 'bus' | 'now'>) {
    ctx.bus.subscribe('agent.deleted', ({ agent }) => {
      for (const [hash, principal] of this.principals.entries()) {
        if (principal.kind === 'agent' && principal.agentId === agent.id) this.principals.delete(hash);
      }
    });
  }

  /** The principal behind a secret, or undefined when it is unknown, revoked or malformed. */
  async authenticate(secret: string): Promise<Principal | undefined> {
    const hash = hashSecret(secret);
    if (hash === this.internalHash) return { kind: 'key', keyId: 'internal', scope: 'read' };
    const cached = this.principals.get(hash);
    if (cached) return cached;
    let principal: Principal | undefined;
    if (secret.startsWith(API_KEY_PREFIX)) {
      const key = await this.ctx.store.apiKeyByHash({ hash });
      if (key) principal = { kind: 'key', keyId: key.id, scope: key.scope };
    } else if (secret.startsWith(AGENT_TOKEN_PREFIX)) {
      const agentId = await this.ctx.store.agentIdByTokenHash({ hash });
      if (agentId !== undefined) principal = { kind: 'agent', agentId };
    }
    if (principal) this.principals.set(hash, principal);
    return principal;
  }

  async create(input: { name: string; scope: Scope; secret?: string; onlyIfNone?: boolean }): Promise<CreatedKey | undefined> {
    const secret = input.secret ?? newApiKeySecret();
    if (!secret.startsWith(API_KEY_PREFIX) || secret.length < API_KEY_PREFIX.length + 32) {
      throw new FleetError('FLEETD_ERR_VALIDATION', `an API key is "${API_KEY_PREFIX}" followed by at least 32 characters`, { field: 'secret' });
    }
    const key = await this.ctx.store.apiKeyInsert({
      id: `key_${randomBytes(8).toString('hex')}`,
      name: input.name,
      scope: input.scope,
      hash: hashSecret(secret),
      now: this.ctx.now(),
      onlyIfNone: input.onlyIfNone,
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
    for (const [hash, principal] of this.principals.entries()) {
      if (principal.kind === 'key' && principal.keyId === id) this.principals.delete(hash);
    }
    return key;
  }
}
