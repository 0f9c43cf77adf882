/**
 * Namespaces: the walls between teams sharing one fleetd. Every task, agent, lock, pipeline run,
 * case, schedule and type policy belongs to exactly one; an API key is scoped to a list of them
 * (`*`: all); an agent belongs to the one it registered in.
 */

/** Where everything lives unless a request says otherwise, and where everything stored before namespaces existed went. */
export const DEFAULT_NAMESPACE = 'default';

/** A key scoped to `*` reaches every namespace, present and future. */
export const ALL_NAMESPACES = '*';

/** Lower-case letters, digits, `-` and `_`, starting with a letter or digit, at most 63 characters (a DNS label's length). */
export const NAMESPACE_PATTERN = '^[a-z0-9][a-z0-9_-]{0,62}$';
const namePattern = new RegExp(NAMESPACE_PATTERN);

export const isNamespaceName = (name: string): boolean => namePattern.test(name);

/**
 * The namespaces a request may read: `undefined` for all of them (a `*` key, or auth off), else a
 * list. Store list and count calls take this as their `namespaces` filter.
 */
export type NamespaceFilter = readonly string[] | undefined;

/** True when the filter lets `namespace` through. */
export const namespaceVisible = (filter: NamespaceFilter, namespace: string): boolean => filter === undefined || filter.includes(namespace);

/** Limits on what one namespace may use; null: no limit. */
export interface NamespaceQuotas {
  /** Tasks waiting to run (waiting, scheduled and queued) at once: a submit beyond it is refused. */
  maxQueuedTasks: number | null;
  /** Tasks submitted per second, over a sliding second. */
  maxTasksPerSecond: number | null;
  /** Agents registered and not offline at once. */
  maxAgents: number | null;
}

export const NO_QUOTAS: NamespaceQuotas = Object.freeze({ maxQueuedTasks: null, maxTasksPerSecond: null, maxAgents: null });

export interface Namespace {
  name: string;
  quotas: NamespaceQuotas;
  createdAt: number;
  updatedAt: number;
}
