import { useEffect, useState } from 'preact/hooks';
import { get } from './api.js';
import { useLiveData } from './hooks.js';
import { getAll } from './lists.js';
import type { Agent } from './types.js';

/**
 * Agents' names by id, shared by every view that shows an agent: each id is looked up once (an
 * agent's name never changes). undefined: not asked yet; null: being asked, or unknown (deleted).
 */
const names = new Map<string, string | null>();
const listeners = new Set<() => void>();

/** Remembers the names of agents a view has loaded anyway, sparing a look-up each. */
export function rememberAgents(agents: Pick<Agent, 'id' | 'name'>[]): void {
  let added = false;
  for (const a of agents) {
    if (names.get(a.id) !== a.name) {
      names.set(a.id, a.name);
      added = true;
    }
  }
  if (added) for (const l of listeners) l();
}

function lookUp(id: string): void {
  names.set(id, null);
  get<Agent>(`/v1/agents/${encodeURIComponent(id)}`).then(
    (agent) => rememberAgents([agent]),
    () => {},
  );
}

/**
 * An agent as people know it: its name, with its id on hover (and a link to it, unless inside
 * another link). Until the name is known, the start of the id.
 */
export function AgentRef({ id, link = true }: { id: string | null; link?: boolean }) {
  const [, setVersion] = useState(0);
  useEffect(() => {
    const changed = () => setVersion((v) => v + 1);
    listeners.add(changed);
    return () => void listeners.delete(changed);
  }, []);
  if (id === null) return <span class="muted">—</span>;
  if (!names.has(id)) lookUp(id);
  const name = names.get(id);
  const label = name ?? `${id.slice(0, 8)}…`;
  return link ? (
    <a href={`#/agents/${encodeURIComponent(id)}`} class="agent-ref" title={id} data-agent-ref={id}>{label}</a>
  ) : (
    <span class="agent-ref" title={id} data-agent-ref={id}>{label}</span>
  );
}

/** The capabilities of each online agent; null until loaded. Kept current from the agents topic. */
export function useOnlineAgents(): Agent[] | null {
  const [online, setOnline] = useState<Agent[] | null>(null);
  useLiveData(
    {
      load: async () => {
        const agents = await getAll<Agent>('/v1/agents', { status: 'online' });
        rememberAgents(agents);
        setOnline(agents);
      },
      intervalMs: 5_000,
      topics: ['agents'],
    },
    [],
  );
  return online;
}

/** Whether any of these agents has every capability a task requires (what a claim asks of it). */
export function someoneCanTake(online: Agent[], requires: string[]): boolean {
  return online.some((a) => requires.every((r) => a.capabilities.includes(r)));
}

/** Marks queued tasks that wait for an agent that is not there. */
export function NoCapableAgent({ requires }: { requires: string[] }) {
  return (
    <span class="flag" data-flag="no-capable-agent" title={`No online agent has every capability required: ${requires.join(', ')}`}>
      no capable agent online
    </span>
  );
}
