import type { ApiKey } from '../../domain/types.js';

/**
 * Until when a secret of a key works: the key's expiry, and for the secret it had before its last
 * rotation also the end of that secret's grace, whichever comes first. Null: no end.
 */
export function secretValidUntil(key: ApiKey, secret: 'current' | 'previous'): number | null {
  const ends = [key.expiresAt, secret === 'previous' ? (key.previousSecretExpiresAt ?? 0) : null].filter((t): t is number => t !== null);
  return ends.length === 0 ? null : Math.min(...ends);
}

/** Whether the key has expired (a revoked key is another matter). */
export const keyExpired = (key: ApiKey, now: number): boolean => key.expiresAt !== null && key.expiresAt <= now;
