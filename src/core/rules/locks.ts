import type { LockDecision, LockHolder, LockWaiter } from '../../store/store.js';

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

/**
 * Where the holders of a lock's resources may be, since a resource ending in `/` is a directory: a
 * lock on `src/` clashes with `src/a.ts` and the other way round. `exact`: each resource and every
 * directory above it; `under`: each directory asked for, whose every resource below clashes;
 * `roots`: the first segments, sorted, on which acquirers that might clash take turns.
 */
export function lockProbes(resources: readonly string[]): { exact: string[]; under: string[]; roots: string[] } {
  const exact = new Set<string>();
  const under = new Set<string>();
  const roots = new Set<string>();
  for (const resource of resources) {
    exact.add(resource);
    const segments = resource.split('/');
    roots.add(segments[0]);
    for (let i = 1; i < segments.length; i++) exact.add(`${segments.slice(0, i).join('/')}/`);
    if (resource.endsWith('/')) under.add(resource);
  }
  return { exact: [...exact], under: [...under], roots: [...roots].sort() };
}

/** Why a resource name cannot be locked, or null: a `..` segment would name a path outside the one it seems to. */
export function badLockPath(resource: string): string | null {
  if (resource.length === 0) return 'is empty';
  if (resource.split('/').includes('..')) return 'has a .. segment';
  return null;
}

/** Whether two resource names clash: the same name, or one is a directory (ends in `/`) the other lies in. */
export const resourcesClash = (a: string, b: string): boolean => a === b || (a.endsWith('/') && b.startsWith(a)) || (b.endsWith('/') && a.startsWith(b));

/** The requests waiting in line that want any of `resources` (directories included). */
const inTheWayOf = (resources: readonly string[], ahead: LockWaiter[]): LockWaiter[] =>
  ahead.filter((w) => w.resources.some((r) => resources.some((mine) => resourcesClash(r, mine))));

/** A taker that does not wait (a claim, a lock request without waitMs) is behind every waiting request: it never takes resources someone waits for. */
export const LAST_IN_LINE = Number.MAX_SAFE_INTEGER;

/**
 * A taker's place in the line of lock requests waiting, for the store's `line`: it may go when none
 * of the requests ahead of `seq` wants any of `resources`; `onInTheWay` is told which ones do.
 */
export const placeInLine = (seq: number, resources: readonly string[], onInTheWay: (inTheWay: LockWaiter[]) => void) => ({
  seq,
  mayGo: (ahead: LockWaiter[]): boolean => {
    const inTheWay = inTheWayOf(resources, ahead);
    onInTheWay(inTheWay);
    return inTheWay.length === 0;
  },
});
