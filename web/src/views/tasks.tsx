import { useEffect, useRef, useState } from 'preact/hooks';
import { get, query } from '../api.js';
import { ago } from '../format.js';
import { useLiveData, useTick } from '../hooks.js';
import type { ViewProps } from './view.js';
import { setQuery } from '../router.js';
import { TASK_STATUSES, type LiveEvent, type Page, type TaskSummary } from '../types.js';

const ROW_HEIGHT = 32;
const OVERSCAN = 10;
const PAGE_SIZE = 500;
/** Rows re-read from the top on each poll: enough for what is on screen there. */
const REFRESH_SIZE = 100;
/** Rows kept while new ones are prepended at the top; scrolling down loads as many as asked for. */
const MAX_ROWS_AT_TOP = 2_000;
/** Fetch the next page when the viewport comes this many rows from the end of what is loaded. */
const PREFETCH_ROWS = 200;

interface Filters {
  status: string;
  type: string;
  agentId: string;
}

function matches(t: Pick<TaskSummary, 'status' | 'type' | 'agentId'>, f: Filters): boolean {
  return (!f.status || t.status === f.status) && (!f.type || t.type === f.type) && (!f.agentId || t.agentId === f.agentId);
}

/** A change to a task, as a task event reports it. */
interface TaskChange {
  task: TaskSummary;
  created: boolean;
}

/**
 * The rows of one filter loaded so far, newest first, and the cursor of the next page. A new filter
 * gets new TaskRows, and every answer and event is applied to the TaskRows it was asked for only,
 * if it is still the current one: a page fetched for the old filter never lands in the new one's
 * rows. Kept outside component state: with 100,000 rows, copying the array on each update would
 * cost more than rendering.
 */
class TaskRows {
  rows: TaskSummary[] = [];
  index = new Map<number, number>();
  cursor: string | null = null;
  done = false;
  loading = false;
  /**
   * Changes that arrived before the first page, by task: applied over it once it is in (the page
   * may be older or newer than each of them). null once the first page is in.
   */
  early: Map<number, TaskChange> | null = new Map();
  /** Cancels this filter's requests when it is replaced. */
  readonly requests = new AbortController();

  constructor(readonly filters: Filters) {}

  append(items: TaskSummary[]): void {
    for (const t of items) {
      if (this.index.has(t.id)) continue;
      this.index.set(t.id, this.rows.length);
      this.rows.push(t);
    }
  }

  prepend(items: TaskSummary[]): void {
    const fresh = items.filter((t) => !this.index.has(t.id));
    if (!fresh.length) return;
    this.rows = [...fresh, ...this.rows];
    this.index = new Map(this.rows.map((t, i) => [t.id, i]));
  }

  /** Updates a loaded row in place, unless it holds a later state of the task already. */
  update(t: TaskSummary): void {
    const i = this.index.get(t.id);
    if (i !== undefined && t.updatedAt >= this.rows[i].updatedAt) this.rows[i] = { ...this.rows[i], ...t };
  }

  get newestId(): number {
    return this.rows[0]?.id ?? 0;
  }
}

export default function Tasks({ route }: ViewProps) {
  const data = useRef<TaskRows>(null!);
  data.current ??= new TaskRows({
    status: route.query.get('status') ?? '',
    type: route.query.get('type') ?? '',
    agentId: route.query.get('agentId') ?? '',
  });
  const [version, setVersion] = useState(0);
  const bump = () => setVersion((v) => v + 1);
  const [scrollTop, setScrollTop] = useState(0);
  const [viewport, setViewport] = useState(600);
  const [pendingNew, setPendingNew] = useState(0);
  const [error, setError] = useState('');
  const scroller = useRef<HTMLDivElement>(null);
  const frame = useRef(0);
  /** Set by the first load: until then, the live stream is not confirmed and nothing is fetched. */
  const loadedOnce = useRef(false);
  useTick(5_000);

  const fetchPage = (d: TaskRows, cursor: string | null, limit: number) =>
    get<Page<TaskSummary>>(`/v1/tasks${query({ ...d.filters, limit, cursor: cursor ?? undefined })}`, d.requests.signal);

  const loadMore = async (d = data.current) => {
    if (d.loading || d.done) return;
    d.loading = true;
    try {
      const page = await fetchPage(d, d.cursor, PAGE_SIZE);
      if (d !== data.current) return;
      d.append(page.items);
      d.cursor = page.nextCursor;
      d.done = page.nextCursor === null;
      if (d.early) {
        const early = [...d.early.values()].sort((a, b) => a.task.id - b.task.id);
        d.early = null;
        apply(d, early);
      }
      setError('');
    } catch (err) {
      if (d === data.current) setError((err as Error).message);
    } finally {
      d.loading = false;
      if (d === data.current) bump();
    }
  };

  /** Shows the rows of these filters from the first page on. */
  const restart = (filters: Filters) => {
    data.current.requests.abort();
    data.current = new TaskRows(filters);
    setPendingNew(0);
    scroller.current?.scrollTo({ top: 0 });
    setScrollTop(0);
    if (loadedOnce.current) void loadMore();
    bump();
  };

  /** The first page again: rows already loaded are refreshed, newer ones shown or counted. */
  const refreshTop = async () => {
    loadedOnce.current = true;
    const d = data.current;
    if (d.early) return loadMore(d);
    const page = await fetchPage(d, null, REFRESH_SIZE);
    if (d !== data.current) return;
    const newer = page.items.filter((t) => t.id > d.newestId);
    if (newer.length === REFRESH_SIZE && page.nextCursor) {
      // More arrived than one refresh reads: the rows in between are unknown, so start again.
      if (atTop()) return restart(d.filters);
      setPendingNew((n) => n + newer.length);
    } else {
      for (const t of page.items) d.update(t);
      takeNewer(d, newer);
    }
    bump();
  };

  /** Applies task events, oldest first, to rows whose first page is in. */
  const apply = (d: TaskRows, changes: TaskChange[]) => {
    const created: TaskSummary[] = [];
    for (const { task, created: isNew } of changes) {
      if (isNew && matches(task, d.filters) && task.id > d.newestId) created.push(task);
      else d.update(task);
    }
    takeNewer(d, created.reverse());
  };

  const atTop = () => (scroller.current?.scrollTop ?? 0) < ROW_HEIGHT;
  /** New rows go in at once when the operator is at the top; otherwise they are counted, not jumped in. */
  const takeNewer = (d: TaskRows, newer: TaskSummary[]) => {
    if (!newer.length) return;
    if (!atTop()) setPendingNew((n) => n + newer.length);
    else if (d.rows.length + newer.length <= MAX_ROWS_AT_TOP) d.prepend(newer);
    // Rows keep arriving while the page sits at the top: start again from the newest page rather
    // than grow without bound (nothing on screen changes but the new rows).
    else restart(d.filters);
  };

  useLiveData(
    {
      load: refreshTop,
      intervalMs: 2_000,
      topics: ['tasks'],
      loadWhenSubscribed: true,
      onEvents: (events: LiveEvent[]) => {
        const d = data.current;
        const changes: TaskChange[] = [];
        for (const e of events) {
          if ('task' in e.data) changes.push({ task: e.data.task, created: e.name === 'task.created' });
        }
        if (d.early) {
          for (const c of changes) {
            const seen = d.early.get(c.task.id);
            d.early.set(c.task.id, seen && seen.task.updatedAt > c.task.updatedAt ? seen : { ...c, created: c.created || !!seen?.created });
          }
          return;
        }
        apply(d, changes);
        bump();
      },
    },
    // One subscription for every filter: a filter change starts new rows, not a new subscription
    // (whose gap between unsubscribe and subscribe would lose events).
    [],
  );

  useEffect(() => {
    const el = scroller.current!;
    const resize = new ResizeObserver(() => setViewport(el.clientHeight));
    resize.observe(el);
    return () => resize.disconnect();
  }, []);

  const d = data.current;
  const filters = d.filters;
  const first = Math.max(0, Math.floor(scrollTop / ROW_HEIGHT) - OVERSCAN);
  const last = Math.min(d.rows.length, Math.ceil((scrollTop + viewport) / ROW_HEIGHT) + OVERSCAN);
  useEffect(() => {
    if (loadedOnce.current && !d.early && !d.done && !d.loading && last > d.rows.length - PREFETCH_ROWS) void loadMore();
  }, [last, version]);

  const onScroll = () => {
    cancelAnimationFrame(frame.current);
    frame.current = requestAnimationFrame(() => {
      const top = scroller.current!.scrollTop;
      setScrollTop(top);
      if (top < ROW_HEIGHT && pendingNew) restart(data.current.filters);
    });
  };

  const set = (k: keyof Filters) => (e: Event) => {
    const next = { ...data.current.filters, [k]: (e.target as HTMLInputElement).value.trim() };
    if (next[k] === data.current.filters[k]) return;
    setQuery('/tasks', { ...next });
    restart(next);
  };
  const rows = d.rows.slice(first, last);
  const total = d.rows.length + (d.done ? 0 : 1);

  return (
    <div class="tasks-view">
      <form class="filters" onSubmit={(e) => e.preventDefault()}>
        <label>
          status
          <select name="status" value={filters.status} onChange={set('status')}>
            <option value="">any</option>
            {TASK_STATUSES.map((s) => <option value={s}>{s}</option>)}
          </select>
        </label>
        {/* Uncontrolled: a render while events stream in must not wipe what is being typed. */}
        <label>
          type <input name="type" defaultValue={filters.type} onChange={set('type')} placeholder="any" />
        </label>
        <label>
          agent <input name="agentId" defaultValue={filters.agentId} onChange={set('agentId')} placeholder="any" />
        </label>
        <span class="muted" data-loaded={d.rows.length}>
          {d.rows.length.toLocaleString()} loaded{d.done ? '' : ', more on scroll'}
        </span>
        {pendingNew > 0 && (
          <button type="button" class="new-rows" onClick={() => restart(filters)}>
            {pendingNew} new ↑
          </button>
        )}
      </form>
      {error && <p class="error">{error}</p>}
      <div class="vtable">
        <div class="vrow vhead">
          <span>id</span><span>type</span><span>status</span><span>priority</span><span>attempts</span><span>agent</span><span>created</span><span>updated</span>
        </div>
        <div class="vscroll" ref={scroller} onScroll={onScroll} data-testid="task-scroller">
          <div style={{ height: `${total * ROW_HEIGHT}px`, position: 'relative' }}>
            <div style={{ transform: `translateY(${first * ROW_HEIGHT}px)` }}>
              {rows.map((t) => (
                <a class="vrow" href={`#/tasks/${t.id}`} key={t.id} data-task-id={t.id}>
                  <span>{t.id}</span>
                  <span>{t.type}</span>
                  <span><span class={`pill status-${t.status}`} data-status={t.status}>{t.status}</span></span>
                  <span>{t.priority}</span>
                  <span>{t.attempts}/{t.maxAttempts}</span>
                  <span class="mono">{t.agentId ?? '—'}</span>
                  <span>{ago(t.createdAt)}</span>
                  <span>{ago(t.updatedAt)}</span>
                </a>
              ))}
              {!d.done && last >= d.rows.length && <div class="vrow muted loading-more">loading…</div>}
              {d.done && d.rows.length === 0 && <div class="vrow muted">No tasks match.</div>}
            </div>
          </div>
        </div>
      </div>
    </div>
  );
}
