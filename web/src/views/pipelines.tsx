import { useRef, useState } from 'preact/hooks';
import { get, query } from '../api.js';
import { ago, time } from '../format.js';
import { useLiveData, useTick } from '../hooks.js';
import type { ViewProps } from './view.js';
import { setQuery } from '../router.js';
import { RUN_STATUSES, type LiveEvent, type Page, type PipelineInfo, type PipelineRun } from '../types.js';
import { applyRunEvent } from './run-events.js';

const PAGE_SIZE = 50;

interface Filters {
  pipeline: string;
  status: string;
}

/** Pipeline runs, newest first, each with its steps' progress; live from the `pipelines` topic. */
export default function Pipelines({ route }: ViewProps) {
  // The filters in force; an answer asked for other filters (an object since replaced) is dropped.
  const filters = useRef<Filters>(null!);
  filters.current ??= { pipeline: route.query.get('pipeline') ?? '', status: route.query.get('status') ?? '' };
  const [list, setList] = useState<{ runs: PipelineRun[]; cursor: string | null } | null>(null);
  const [pipelines, setPipelines] = useState<PipelineInfo[]>([]);
  const [error, setError] = useState('');
  /** One list per load in flight, of the events that arrive meanwhile: they go over its page. */
  const arriving = useRef(new Set<LiveEvent[]>());
  useTick(5_000);

  const fetchPage = (f: Filters, after: string | null) =>
    get<Page<PipelineRun>>(`/v1/pipelines/runs${query({ ...f, limit: PAGE_SIZE, cursor: after ?? undefined })}`);

  /** The first page again, keeping the older pages already loaded below it. */
  const load = async () => {
    const asked = filters.current;
    const meanwhile: LiveEvent[] = [];
    arriving.current.add(meanwhile);
    try {
      const [page, defined] = await Promise.all([fetchPage(asked, null), get<{ items: PipelineInfo[] }>('/v1/pipelines')]);
      if (asked !== filters.current) return;
      const oldest = page.items.at(-1)?.id ?? 0;
      const fresh = page.items.map((r) => meanwhile.reduce(applyRunEvent, r));
      setList((loaded) => {
        const below = page.nextCursor && loaded ? loaded.runs.filter((r) => r.id < oldest) : [];
        return { runs: [...fresh, ...below], cursor: below.length ? loaded!.cursor : page.nextCursor };
      });
      setPipelines(defined.items);
      setError('');
    } catch (err) {
      if (asked === filters.current) setError((err as Error).message);
    } finally {
      arriving.current.delete(meanwhile);
    }
  };

  const loadMore = async () => {
    const asked = filters.current;
    if (!list?.cursor) return;
    const page = await fetchPage(asked, list.cursor);
    if (asked !== filters.current) return;
    setList((loaded) => ({
      runs: [...(loaded?.runs ?? []), ...page.items.filter((r) => !loaded?.runs.some((l) => l.id === r.id))],
      cursor: page.nextCursor,
    }));
  };

  useLiveData(
    {
      load,
      intervalMs: 2_000,
      topics: ['pipelines'],
      loadWhenSubscribed: true,
      onEvents: (events: LiveEvent[]) => {
        for (const list of arriving.current) list.push(...events);
        const byRun = new Map<number, LiveEvent[]>();
        for (const e of events) {
          if (!('run' in e.data)) continue;
          const id = e.data.run.id;
          byRun.set(id, [...(byRun.get(id) ?? []), e]);
        }
        setList((loaded) => loaded && { ...loaded, runs: loaded.runs.map((r) => (byRun.get(r.id) ?? []).reduce(applyRunEvent, r)) });
        // New runs, and what a finished run's other steps became, come from the API.
        return events.some((e) => e.name === 'pipeline.run.created' || e.name === 'pipeline.run.finished');
      },
    },
    [],
  );

  const change = (k: keyof Filters) => (e: Event) => {
    filters.current = { ...filters.current, [k]: (e.target as HTMLSelectElement).value };
    setList(null);
    setQuery('/pipelines', { ...filters.current });
    void load();
  };
  const f = filters.current;
  const runs = list?.runs;

  return (
    <div>
      <form class="filters" onSubmit={(e) => e.preventDefault()}>
        <label>
          pipeline
          <select name="pipeline" value={f.pipeline} onChange={change('pipeline')}>
            <option value="">any</option>
            {/* Each name once: namespaces may define the same one, and runs are filtered by name. */}
            {[...new Set(pipelines.map((p) => p.name))].map((name) => <option value={name}>{name}</option>)}
          </select>
        </label>
        <label>
          status
          <select name="status" value={f.status} onChange={change('status')}>
            <option value="">any</option>
            {RUN_STATUSES.map((s) => <option value={s}>{s}</option>)}
          </select>
        </label>
        <span class="muted">{runs ? `${runs.length} run${runs.length === 1 ? '' : 's'}${list?.cursor ? ', more below' : ''}` : 'loading…'}</span>
      </form>
      {error && <p class="error">{error}</p>}
      <table class="data">
        <thead>
          <tr><th>run</th><th>pipeline</th><th>status</th><th>steps</th><th>created</th><th>updated</th></tr>
        </thead>
        <tbody>
          {(runs ?? []).map((r) => (
            <tr key={r.id} data-run-id={r.id} data-run-status={r.status}>
              <td><a href={`#/pipelines/${r.id}`}>{r.id}</a></td>
              <td>{r.pipeline}</td>
              <td><span class={`pill run-${r.status}`}>{r.status}</span></td>
              <td>
                <span class="steps">
                  {r.steps.map((s) => (
                    <span class={`step step-${s.status}`} data-step={s.name} data-step-status={s.status} title={`${s.name}: ${s.status}, attempt ${s.attempts}`}>
                      {s.name}
                    </span>
                  ))}
                </span>
              </td>
              <td title={time(r.createdAt)}>{ago(r.createdAt)}</td>
              <td title={time(r.updatedAt)}>{ago(r.updatedAt)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {runs?.length === 0 && <p class="muted">No pipeline runs match.</p>}
      {list?.cursor && <button type="button" onClick={loadMore}>Older runs</button>}
    </div>
  );
}
