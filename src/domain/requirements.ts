/**
 * Requirement keys: a task's set of required capabilities in one canonical string, the unit that
 * claims seek by, wake-ups count by and both drivers index on.
 */

/** The canonical key of a set of required capabilities: sorted, de-duplicated, joined. */
export function requirementKey(requires: readonly string[]): string {
  return [...new Set(requires)].sort().join('\n');
}

const parsedKeys = new Map<string, readonly string[]>();

/** The capabilities a requirement key stands for; memoised, since claims and wake-ups ask for the same few keys. */
export function requirementsOf(key: string): readonly string[] {
  let reqs = parsedKeys.get(key);
  if (!reqs) {
    reqs = key === '' ? [] : key.split('\n');
    if (parsedKeys.size >= 10_000) parsedKeys.clear();
    parsedKeys.set(key, reqs);
  }
  return reqs;
}
