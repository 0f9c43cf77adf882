import type { FleetContext } from './context.js';
import { notFound } from '../domain/errors.js';
import type { TaskStatus } from '../domain/types.js';
import { namespaceVisible, type Namespace, type NamespaceFilter, type NamespaceQuotas } from '../domain/namespaces.js';

const WAITING_TO_RUN: ReadonlySet<TaskStatus> = new Set(['waiting', 'scheduled', 'queued']);

/**
 * The namespaces known to this fleetd (`default`, each one a key is scoped to, each one given
 * quotas) and their quotas.
 */
export class NamespaceService {
  constructor(private readonly ctx: Pick<FleetContext, 'store' | 'now'>) {}

  /** The known namespaces the filter lets through, by name. */
  async list(filter: NamespaceFilter): Promise<Namespace[]> {
    return (await this.ctx.store.namespaceList()).filter((n) => namespaceVisible(filter, n.name));
  }

  async get(name: string): Promise<Namespace> {
    const found = await this.ctx.store.namespaceGet({ name });
    if (!found) throw notFound('namespace', name);
    return found;
  }

  /**
   * What the namespace uses now, for its quotas: tasks waiting to run (waiting, scheduled, queued)
   * and agents not offline, read from the counters the store keeps (no scan of tasks).
   */
  async usage(name: string): Promise<{ queuedTasks: number; agents: number }> {
    const namespaces = [name];
    const [tasks, agents] = await Promise.all([this.ctx.store.taskCounts({ namespaces }), this.ctx.store.agentCounts({ namespaces })]);
    return {
      queuedTasks: tasks.reduce((n, c) => (WAITING_TO_RUN.has(c.status) ? n + c.count : n), 0),
      agents: agents.reduce((n, c) => (c.status === 'offline' ? n : n + c.count), 0),
    };
  }

  /** Sets the quotas of a namespace (null: no limit), making it known if it was not. */
  setQuotas(name: string, quotas: NamespaceQuotas): Promise<Namespace> {
    return this.ctx.store.namespacePut({ name, quotas, now: this.ctx.now() });
  }
}
