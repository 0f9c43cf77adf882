/**
 * Requirement keys: a task's set of required capabilities in one canonical string, the unit that
 * claims seek by, wake-ups count by and both drivers index on.
 */
import { DEFAULT_NAMESPACE } from './namespaces.js';

/** The canonical key of a set of required capabilities: sorted, de-duplicated, joined. */
export function requirementKey(requires: readonly string[]): string {
  // Most tasks require one capability, their type: its key is itself.
  if (requires.length === 1) return requires[0];
  return [...new Set(requires)].sort().join('\n');
}

/** The requirement that pins a task to one agent (`agentId` on submit). */
export const pinnedTo = (agentId: string): string => `agent:${agentId}`;

/**
 * The requirement every task of a namespace other than `default` carries in its requirement key,
 * and that only that namespace's agents hold among their claim keys.
 *
 * Why the namespace lives in the requirement key rather than in a leading index column: the claim
 * indexes (req_key, priority, id), task_counts and queued_groups (by req_key), the tasks.available
 * events (counts by requirement key) and the claim waiters (woken by requirement key) then keep
 * every statement, index and wake-up as they are, and a `default` task's key is the same string as
 * before namespaces existed: the default namespace costs nothing at all. An agent of namespace X
 * only matches X's keys (canClaim), so it is only woken for, and only seeks, X's tasks.
 */
const NAMESPACE_PREFIX = 'namespace:';
export const namespaceRequirement = (namespace: string): string => `${NAMESPACE_PREFIX}${namespace}`;

/** The requirement key a task is stored, claimed and announced by: its requirements and, outside `default`, its namespace's. */
export function taskRequirementKey(task: { requires: readonly string[]; namespace: string }): string {
  return requirementKey(task.namespace === DEFAULT_NAMESPACE ? task.requires : [...task.requires, namespaceRequirement(task.namespace)]);
}

/** A task's own requirements from its stored key: the key's, without its namespace's. */
export function requiresOf(key: string, namespace: string): string[] {
  const reqs = requirementsOf(key);
  if (namespace === DEFAULT_NAMESPACE) return [...reqs];
  const own = namespaceRequirement(namespace);
  return reqs.filter((r) => r !== own);
}

/** The namespace a requirement key belongs to (its `namespace:` requirement, else `default`). */
export function namespaceOfKey(key: string): string {
  const found = requirementsOf(key).find((r) => r.startsWith(NAMESPACE_PREFIX));
  return found === undefined ? DEFAULT_NAMESPACE : found.slice(NAMESPACE_PREFIX.length);
}

/** Requirements that only fleetd gives an agent, never its declared capabilities. */
export const RESERVED_CAPABILITY_PREFIXES: readonly string[] = ['agent:', 'label:', NAMESPACE_PREFIX];

/**
 * What a task's requirements are matched against for an agent: its capabilities, `agent:<id>`
 * (tasks pinned to it), `label:<key>=<value>` for each of its labels (`requires:
 * ["label:region=eu"]`) and, outside `default`, its namespace's requirement. Claims in both drivers
 * and the wake-ups of delivery use the same list, through canClaim.
 */
export function claimKeysOf(agent: { id: string; namespace: string; capabilities: readonly string[]; labels?: Readonly<Record<string, string>> }): string[] {
  const keys = [...agent.capabilities, pinnedTo(agent.id), ...Object.entries(agent.labels ?? {}).map(([k, v]) => `label:${k}=${v}`)];
  if (agent.namespace !== DEFAULT_NAMESPACE) keys.push(namespaceRequirement(agent.namespace));
  return keys;
}

/**
 * Whether an agent of `namespace` with these claim keys (claimKeysOf) can do tasks of requirement
 * key `key`. A `default` agent holds no namespace requirement, so other namespaces' keys fail the
 * first test; an agent of another namespace must also be kept off keys without its namespace's
 * requirement (default's), which the first test alone would let through.
 */
export function canClaim(key: string, claimKeys: ReadonlySet<string>, namespace: string): boolean {
  const reqs = requirementsOf(key);
  if (!reqs.every((c) => claimKeys.has(c))) return false;
  return namespace === DEFAULT_NAMESPACE || reqs.includes(namespaceRequirement(namespace));
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
