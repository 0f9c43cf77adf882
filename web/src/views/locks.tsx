import { useState } from 'preact/hooks';
import { AgentRef } from '../agent-refs.js';
import { ago, time } from '../format.js';
import { useLiveData, useTick } from '../hooks.js';
import { getAll } from '../lists.js';
import { useNamespaces } from '../namespaces.js';
import type { ViewProps } from './view.js';
import type { Lock } from '../types.js';

export default function Locks(_props: ViewProps) {
  const [locks, setLocks] = useState<Lock[] | null>(null);
  const [error, setError] = useState('');
  const { column: namespaceColumn } = useNamespaces();
  useTick(5_000);

  useLiveData(
    {
      load: async () => {
        try {
          setLocks(await getAll<Lock>('/v1/locks', {}));
          setError('');
        } catch (err) {
          setError((err as Error).message);
        }
      },
      intervalMs: 2_000,
      topics: ['locks'],
    },
    [],
  );

  return (
    <div>
      {error && <p class="error">{error}</p>}
      <table class="data">
        <thead>
          <tr><th>resources</th><th>held by</th><th>description</th><th>since</th><th>until</th>{namespaceColumn && <th>namespace</th>}</tr>
        </thead>
        <tbody>
          {(locks ?? []).map((l) => (
            <tr key={l.id} data-lock-id={l.id}>
              <td class="mono">{l.resources.join(', ')}</td>
              <td><AgentRef id={l.agentId} /></td>
              <td>{l.description || '—'}</td>
              <td title={time(l.createdAt)}>{ago(l.createdAt)}</td>
              <td title={time(l.expiresAt)}>{ago(l.expiresAt)}</td>
              {namespaceColumn && <td data-namespace={l.namespace}>{l.namespace}</td>}
            </tr>
          ))}
        </tbody>
      </table>
      {locks?.length === 0 && <p class="muted">No locks held.</p>}
    </div>
  );
}
