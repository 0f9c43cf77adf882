import { useState } from 'preact/hooks';
import { get, query } from '../api.js';
import { ago, time } from '../format.js';
import { useLiveData, useTick } from '../hooks.js';
import type { ViewProps } from './view.js';
import type { Agent, Lock, Page, Task } from '../types.js';

const RECENT = 50;

export default function AgentDetail({ route }: ViewProps) {
  const id = route.view === 'agent' ? route.id : '';
  const [agent, setAgent] = useState<Agent | null>(null);
  const [tasks, setTasks] = useState<Task[]>([]);
  const [locks, setLocks] = useState<Lock[]>([]);
  const [error, setError] = useState('');
  useTick(5_000);

  useLiveData(
    {
      load: async () => {
        try {
          const [a, t, l] = await Promise.all([
            get<Agent>(`/v1/agents/${encodeURIComponent(id)}`),
            get<Page<Task>>(`/v1/tasks${query({ agentId: id, limit: RECENT })}`),
            get<Page<Lock>>(`/v1/locks${query({ agentId: id, limit: 1000 })}`),
          ]);
          setAgent(a);
          setTasks(t.items);
          setLocks(l.items);
          setError('');
        } catch (err) {
          setError((err as Error).message);
        }
      },
      intervalMs: 2_000,
      topics: ['agents', 'locks', 'tasks'],
    },
    [id],
  );

  if (!agent) return error ? <p class="error">{error}</p> : <p class="muted">Loading agent…</p>;
  return (
    <div class="detail">
      <h2>
        {agent.name} <span class={`pill agent-${agent.status}`}>{agent.status}</span>
      </h2>
      {error && <p class="error">{error}</p>}
      <div class="grid">
        <section class="panel">
          <h3>Agent</h3>
          <dl>
            <dt>id</dt><dd class="mono">{agent.id}</dd>
            <dt>namespace</dt><dd data-testid="namespace">{agent.namespace}</dd>
            <dt>capabilities</dt><dd>{agent.capabilities.join(', ') || '—'}</dd>
            <dt>labels</dt><dd>{Object.entries(agent.labels).map(([k, v]) => `${k}=${v}`).join(', ') || '—'}</dd>
            <dt>max concurrency</dt><dd>{agent.maxConcurrency}</dd>
            <dt>in flight</dt><dd>{tasks.filter((t) => t.status === 'leased' && t.agentId === agent.id).length}</dd>
            <dt>registered</dt><dd>{time(agent.createdAt)}</dd>
            <dt>last heartbeat</dt><dd>{ago(agent.lastHeartbeatAt)}</dd>
          </dl>
        </section>
        <section class="panel">
          <h3>Locks held</h3>
          {locks.length === 0 ? <p class="muted">None.</p> : (
            <ul>{locks.map((l) => <li><span class="mono">{l.resources.join(', ')}</span> until {time(l.expiresAt)}</li>)}</ul>
          )}
        </section>
      </div>
      <section class="panel">
        <h3>Recent tasks <a class="small" href={`#/tasks?agentId=${encodeURIComponent(agent.id)}`}>all</a></h3>
        <table class="data">
          <thead><tr><th>id</th><th>type</th><th>status</th><th>attempts</th><th>updated</th></tr></thead>
          <tbody>
            {tasks.map((t) => (
              <tr>
                <td><a href={`#/tasks/${t.id}`}>{t.id}</a></td>
                <td>{t.type}</td>
                <td><span class={`pill status-${t.status}`}>{t.status}</span></td>
                <td>{t.attempts}/{t.maxAttempts}</td>
                <td>{ago(t.updatedAt)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </section>
    </div>
  );
}
