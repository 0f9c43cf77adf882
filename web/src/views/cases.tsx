import { useState } from 'preact/hooks';
import { get, query } from '../api.js';
import { ago, time } from '../format.js';
import { useLiveData, useTick } from '../hooks.js';
import type { ViewProps } from './view.js';
import type { Case, LiveEvent, Page } from '../types.js';

const PAGE_SIZE = 100;

/** Report 002's cases, newest first: runs grouped by the similarity of their texts. */
export default function Cases(_props: ViewProps) {
  const [list, setList] = useState<{ cases: Case[]; cursor: string | null } | null>(null);
  const [error, setError] = useState('');
  useTick(5_000);

  /** The first page again, keeping the older pages already loaded below it. */
  const load = async () => {
    try {
      const page = await get<Page<Case>>(`/v1/cases${query({ limit: PAGE_SIZE })}`);
      const oldest = page.items.at(-1)?.id ?? 0;
      setList((loaded) => {
        const below = page.nextCursor && loaded ? loaded.cases.filter((c) => c.id < oldest) : [];
        return { cases: [...page.items, ...below], cursor: below.length ? loaded!.cursor : page.nextCursor };
      });
      setError('');
    } catch (err) {
      setError((err as Error).message);
    }
  };

  const loadMore = async () => {
    if (!list?.cursor) return;
    const page = await get<Page<Case>>(`/v1/cases${query({ limit: PAGE_SIZE, cursor: list.cursor })}`);
    setList((loaded) => ({ cases: [...(loaded?.cases ?? []), ...page.items.filter((c) => !loaded?.cases.some((l) => l.id === c.id))], cursor: page.nextCursor }));
  };

  useLiveData(
    {
      load,
      intervalMs: 5_000,
      topics: ['pipelines'],
      // A run joins or opens a case before it finishes.
      onEvents: (events: LiveEvent[]) => events.some((e) => e.name === 'pipeline.run.finished'),
    },
    [],
  );

  const cases = list?.cases;
  return (
    <div>
      {error && <p class="error">{error}</p>}
      <table class="data">
        <thead>
          <tr><th>case</th><th>title</th><th class="n">runs</th><th>opened</th><th>last joined</th></tr>
        </thead>
        <tbody>
          {(cases ?? []).map((c) => (
            <tr key={c.id} data-case-id={c.id}>
              <td><a href={`#/cases/${c.id}`}>{c.id}</a></td>
              <td>{c.title}</td>
              <td class="n" data-case-size={c.size}>{c.size}</td>
              <td title={time(c.createdAt)}>{ago(c.createdAt)}</td>
              <td title={time(c.updatedAt)}>{ago(c.updatedAt)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {cases?.length === 0 && <p class="muted">No cases yet: runs with a group-into-case step open them.</p>}
      {list?.cursor && <button type="button" onClick={loadMore}>Older cases</button>}
    </div>
  );
}
