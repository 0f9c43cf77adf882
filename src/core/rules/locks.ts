import type { LockDecision, LockHolder } from '../../store/store.js';

/**
 * Whether a lock may be taken, from the current holders of the resources it asks for: every
 * resource or none. A holder past its TTL that the expirer has not reached yet holds nothing, and
 * is replaced; any other holder is a conflict.
 */
export function decideLock(holders: LockHolder[], now: number): LockDecision {
  const conflicts = holders.filter((h) => h.expiresAt > now);
  if (conflicts.length > 0) return { acquire: false, conflicts };
  return { acquire: true, replace: [...new Set(holders.map((h) => h.lockId))] };
}
