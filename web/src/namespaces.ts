import { useEffect, useState } from 'preact/hooks';
import { apiKey, authorization, chosenNamespace, storeNamespace } from './auth.js';
import { connection } from './live.js';

/**
 * The namespaces the operator can pick between in the header: those GET /v1/namespaces lists for
 * the key, when there are several. A key that may not list them (only admin keys may: 403) or that
 * reaches one namespace gets no picker: fleetd shows it everything it reaches.
 */
class Namespaces {
  choices: readonly string[] = [];
  /** The key the choices were listed for (null: none); undefined until they have been. */
  private listedFor: string | null | undefined;
  private readonly listeners = new Set<() => void>();

  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Lists the choices once per key. A namespace picked before that the key does not offer is let go. */
  async load(): Promise<void> {
    const key = apiKey();
    if (this.listedFor === key) return;
    let res: Response;
    try {
      res = await fetch('/v1/namespaces', { headers: authorization(), cache: 'no-store' });
    } catch {
      return; // fleetd is not reachable: the connection says so, and the next load tries again
    }
    if (!res.ok && res.status !== 403 && res.status !== 401) return;
    const names = res.ok ? ((await res.json()) as { items: { name: string }[] }).items.map((n) => n.name) : [];
    this.listedFor = key;
    this.choices = names.length > 1 ? names : [];
    const chosen = chosenNamespace();
    if (chosen !== null && !this.choices.includes(chosen)) this.pick(null);
    else this.changed();
  }

  /** Works in `namespace` from now on (null: every one the key reaches); the views load again. */
  pick(namespace: string | null): void {
    storeNamespace(namespace);
    connection.reopen();
    this.changed();
  }

  private changed(): void {
    for (const l of this.listeners) l();
  }
}

export const namespaces = new Namespaces();

export interface NamespaceState {
  choices: readonly string[];
  chosen: string | null;
  /** Whether rows of several namespaces may show, so that lists say which each is in. */
  column: boolean;
}

function current(): NamespaceState {
  const chosen = chosenNamespace();
  return { choices: namespaces.choices, chosen, column: chosen === null && namespaces.choices.length > 1 };
}

export function useNamespaces(): NamespaceState {
  const [state, setState] = useState(current);
  useEffect(() => {
    const off = namespaces.onChange(() => setState(current()));
    setState(current());
    return off;
  }, []);
  return state;
}
