import { useState } from 'preact/hooks';
import { get } from '../api.js';
import { num, time } from '../format.js';
import { useLiveData } from '../hooks.js';
import type { ViewProps } from './view.js';
import type { Case, CaseMember, LiveEvent } from '../types.js';

/** One case and its member runs, each with its text and how similar it was when it joined. */
export default function CaseDetail({ route }: ViewProps) {
  const id = route.view === 'case' ? route.id : 0;
  const [found, setFound] = useState<(Case & { members: CaseMember[] }) | null>(null);
  const [error, setError] = useState('');

  useLiveData(
    {
      load: async () => {
        try {
          setFound((await get<{ case: Case & { members: CaseMember[] } }>(`/v1/cases/${id}`)).case);
          setError('');
        } catch (err) {
          setError((err as Error).message);
        }
      },
      intervalMs: 5_000,
      topics: ['pipelines'],
      onEvents: (events: LiveEvent[]) => events.some((e) => e.name === 'pipeline.run.finished'),
    },
    [id],
  );

  if (!found) return error ? <p class="error">{error}</p> : <p class="muted">Loading case {id}…</p>;
  return (
    <div class="detail" data-case-id={found.id}>
      <h2>
        Case {found.id} <span class="small muted">{found.size} runs, opened {time(found.createdAt)}</span>
      </h2>
      <p>{found.title}</p>
      {error && <p class="error">{error}</p>}
      <table class="data">
        <thead>
          <tr><th>run</th><th class="n">similarity</th><th>text</th><th>joined</th></tr>
        </thead>
        <tbody>
          {found.members.map((m) => (
            <tr key={m.runId} data-member-run={m.runId}>
              <td><a href={`#/pipelines/${m.runId}`}>{m.runId}</a></td>
              <td class="n">{num(m.similarity * 100, 1)} %</td>
              <td>{m.text}</td>
              <td>{time(m.addedAt)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
