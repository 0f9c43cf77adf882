/**
 * Requirement keys: a task's set of required capabilities in one canonical string, the unit that
 * claims seek by, wake-ups count by and both drivers index on.
 */

/** The canonical key of a set of required capabilities: sorted, de-duplicated, joined. */
export function requirementKey(requires: readonly string[]): string {
  return [...new Set(requires)].sort().join('\n');
}

/** The requirement that pins a task to one agent (`agentId` on submit). */
export const pinnedTo = (agentId: string): string => `agent:${agentId}`;

/** Requirements that only fleetd gives an agent, never its declared capabilities. */
export const RESERVED_CAPABILITY_PREFIXES: readonly string[] = ['agent:', 'label:'];

/**
 * What a task's requirements are matched against for an agent: its capabilities, `agent:<id>`
 * (tasks pinned to it) and `label:<key>=<value>` for each of its labels (`requires:
 * ["label:region=eu"]`). Claims in both drivers and the wake-ups of delivery use the same list.
 */
export function claimKeysOf(agent: { id: string; capabilities: readonly string[]; labels?: Readonly<Record<string, string>> }): string[] {
  return [...agent.capabilities, pinnedTo(agent.id), ...Object.entries(agent.labels ?? {}).map(([k, v]) => `label:${k}=${v}`)];
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
