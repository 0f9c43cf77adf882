import { useState } from 'preact/hooks';
import { rememberAgents } from '../agent-refs.js';
import { ago } from '../format.js';
import { useLiveData, useTick } from '../hooks.js';
import { useNamespaces } from '../namespaces.js';
import type { ViewProps } from './view.js';
import { setQuery } from '../router.js';
import { countBy, getAll } from '../lists.js';
import type { Agent, Lock, Task } from '../types.js';

export default function Agents({ route }: ViewProps) {
  const [status, setStatus] = useState(route.query.get('status') ?? '');
  const [search, setSearch] = useState(route.query.get('q') ?? '');
  const [agents, setAgents] = useState<Agent[] | null>(null);
  const [inFlight, setInFlight] = useState(new Map<string, number>());
  const [locks, setLocks] = useState(new Map<string, number>());
  const [error, setError] = useState('');
  const { column: namespaceColumn } = useNamespaces();
  useTick(5_000);

  useLiveData(
    {
      load: async () => {
        try {
          const [a, leased, held] = await Promise.all([
            getAll<Agent>('/v1/agents', { status: status || undefined }),
            getAll<Task>('/v1/tasks', { status: 'leased' }),
            getAll<Lock>('/v1/locks', {}),
          ]);
          setAgents(a);
          rememberAgents(a);
          setInFlight(countBy(leased, (t) => t.agentId));
          setLocks(countBy(held, (l) => l.agentId));
          setError('');
        } catch (err) {
          setError((err as Error).message);
        }
      },
      intervalMs: 2_000,
      topics: ['agents', 'locks'],
    },
    [status],
  );

  const needle = search.toLowerCase();
  const shown = (agents ?? []).filter(
    (a) => !needle || a.name.toLowerCase().includes(needle) || a.id.includes(needle) || a.capabilities.some((c) => c.toLowerCase().includes(needle)),
  );
  const update = (next: { status?: string; q?: string }) => {
    const s = next.status ?? status;
    const q = next.q ?? search;
    setStatus(s);
    setSearch(q);
    setQuery('/agents', { status: s, q });
  };

  return (
    <div>
      <form class="filters" onSubmit={(e) => e.preventDefault()}>
        <label>
          status
          <select name="status" value={status} onChange={(e) => update({ status: (e.target as HTMLSelectElement).value })}>
            <option value="">any</option>
            <option value="online">online</option>
            <option value="stale">stale</option>
            <option value="offline">offline</option>
          </select>
        </label>
        <label>
          search <input name="q" value={search} onInput={(e) => update({ q: (e.target as HTMLInputElement).value })} placeholder="name, id or capability" />
        </label>
        <span class="muted">{agents ? `${shown.length} of ${agents.length}` : 'loading…'}</span>
      </form>
      {error && <p class="error">{error}</p>}
      <table class="data">
        <thead>
          <tr><th>name</th><th>capabilities</th><th>status</th><th class="n">in flight</th><th>last heartbeat</th><th class="n">locks</th>{namespaceColumn && <th>namespace</th>}</tr>
        </thead>
        <tbody>
          {shown.map((a) => (
            <tr key={a.id} data-agent-id={a.id}>
              <td><a href={`#/agents/${a.id}`}>{a.name}</a></td>
              <td>{a.capabilities.join(', ') || '—'}</td>
              <td><span class={`pill agent-${a.status}`}>{a.status}</span></td>
              <td class="n">{inFlight.get(a.id) ?? 0} / {a.maxConcurrency}</td>
              <td>{ago(a.lastHeartbeatAt)}</td>
              <td class="n">{locks.get(a.id) ?? 0}</td>
              {namespaceColumn && <td data-namespace={a.namespace}>{a.namespace}</td>}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
