import type { FleetContext } from './context.js';
import { notFound } from '../domain/errors.js';
import { namespaceVisible, type Namespace, type NamespaceFilter, type NamespaceQuotas } from '../domain/namespaces.js';

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

  /** Sets the quotas of a namespace (null: no limit), making it known if it was not. */
  setQuotas(name: string, quotas: NamespaceQuotas): Promise<Namespace> {
    return this.ctx.store.namespacePut({ name, quotas, now: this.ctx.now() });
  }
}
