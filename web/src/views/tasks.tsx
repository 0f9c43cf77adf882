import { useEffect, useRef, useState } from 'preact/hooks';
import { get, query } from '../api.js';
import { ago } from '../format.js';
import { useLiveData, useTick } from '../hooks.js';
import type { ViewProps } from '../main.js';
import { setQuery } from '../router.js';
import { TASK_STATUSES, type LiveEvent, type Page, type Task } from '../types.js';

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

function matches(t: Pick<Task, 'status' | 'type' | 'agentId'>, f: Filters): boolean {
  return (!f.status || t.status === f.status) && (!f.type || t.type === f.type) && (!f.agentId || t.agentId === f.agentId);
}

/**
 * The rows loaded so far, newest first, and the cursor of the next page. Kept outside component
 * state: with 100,000 rows, copying the array on each update would cost more than rendering.
 */
class TaskRows {
  rows: Task[] = [];
  index = new Map<number, number>();
  cursor: string | null = null;
  done = false;
  loading = false;

  append(items: Task[]): void {
    for (const t of items) {
      if (this.index.has(t.id)) continue;
      this.index.set(t.id, this.rows.length);
      this.rows.push(t);
    }
  }

  prepend(items: Task[]): void {
    const fresh = items.filter((t) => !this.index.has(t.id));
    if (!fresh.length) return;
    this.rows = [...fresh, ...this.rows];
    this.index = new Map(this.rows.map((t, i) => [t.id, i]));
  }

  /** Updates a loaded row in place; false when the task is not loaded. */
  update(t: Partial<Task> & { id: number }): boolean {
    const i = this.index.get(t.id);
    if (i === undefined) return false;
    this.rows[i] = { ...this.rows[i], ...t };
    return true;
  }

  get newestId(): number {
    return this.rows[0]?.id ?? 0;
  }
}

export default function Tasks({ route }: ViewProps) {
  const [filters, setFilters] = useState<Filters>(() => ({
    status: route.query.get('status') ?? '',
    type: route.query.get('type') ?? '',
    agentId: route.query.get('agentId') ?? '',
  }));
  const data = useRef(new TaskRows());
  const [version, setVersion] = useState(0);
  const bump = () => setVersion((v) => v + 1);
  const [scrollTop, setScrollTop] = useState(0);
  const [viewport, setViewport] = useState(600);
  const [pendingNew, setPendingNew] = useState(0);
  const [error, setError] = useState('');
  const scroller = useRef<HTMLDivElement>(null);
  const frame = useRef(0);
  useTick(5_000);

  const fetchPage = async (cursor: string | null, limit = PAGE_SIZE) =>
    get<Page<Task>>(`/v1/tasks${query({ ...filters, limit, cursor: cursor ?? undefined })}`);

  const loadMore = async () => {
    const d = data.current;
    if (d.loading || d.done) return;
    d.loading = true;
    try {
      const page = await fetchPage(d.cursor);
      if (d !== data.current) return;
      d.append(page.items);
      d.cursor = page.nextCursor;
      d.done = page.nextCursor === null;
      setError('');
    } catch (err) {
      setError((err as Error).message);
    } finally {
      d.loading = false;
      bump();
    }
  };

  /** The first page again: rows already loaded are refreshed, newer ones shown or counted. */
  const refreshTop = async () => {
    const d = data.current;
    if (!d.rows.length && !d.done) return loadMore();
    const page = await fetchPage(null, REFRESH_SIZE);
    if (d !== data.current) return;
    const newer = page.items.filter((t) => t.id > d.newestId);
    if (newer.length === REFRESH_SIZE && page.nextCursor) {
      // More arrived than one refresh reads: rows in between are unknown, so start from this page.
      if (atTop()) {
        const fresh = new TaskRows();
        fresh.append(page.items);
        fresh.cursor = page.nextCursor;
        data.current = fresh;
      } else setPendingNew((n) => n + newer.length);
    } else {
      for (const t of page.items) d.update(t);
      takeNewer(newer);
    }
    bump();
  };

  const atTop = () => (scroller.current?.scrollTop ?? 0) < ROW_HEIGHT;
  /** New rows go in at once when the operator is at the top; otherwise they are counted, not jumped in. */
  const takeNewer = (newer: Task[]) => {
    if (!newer.length) return;
    if (!atTop()) setPendingNew((n) => n + newer.length);
    else if (data.current.rows.length + newer.length <= MAX_ROWS_AT_TOP) data.current.prepend(newer);
    else {
      // Rows keep arriving while the page sits at the top: start again from the newest page
      // rather than grow without bound (nothing on screen changes but the new rows).
      data.current = new TaskRows();
      void loadMore();
    }
  };

  useEffect(() => {
    data.current = new TaskRows();
    setPendingNew(0);
    scroller.current?.scrollTo({ top: 0 });
    setQuery('/tasks', { ...filters });
    bump();
  }, [filters.status, filters.type, filters.agentId]);

  useLiveData(
    {
      load: refreshTop,
      intervalMs: 2_000,
      topics: ['tasks'],
      onEvents: (events: LiveEvent[]) => {
        const created: Task[] = [];
        for (const e of events) {
          const task = e.data?.task as Task | undefined;
          if (!task) continue;
          if (e.name === 'task.created') {
            if (matches(task, filters) && task.id > data.current.newestId) created.push(task);
          } else data.current.update(task);
        }
        takeNewer(created.reverse());
        bump();
      },
    },
    [filters.status, filters.type, filters.agentId],
  );

  useEffect(() => {
    const el = scroller.current!;
    const resize = new ResizeObserver(() => setViewport(el.clientHeight));
    resize.observe(el);
    return () => resize.disconnect();
  }, []);

  const d = data.current;
  const first = Math.max(0, Math.floor(scrollTop / ROW_HEIGHT) - OVERSCAN);
  const last = Math.min(d.rows.length, Math.ceil((scrollTop + viewport) / ROW_HEIGHT) + OVERSCAN);
  useEffect(() => {
    if (!d.done && !d.loading && last > d.rows.length - PREFETCH_ROWS) void loadMore();
  }, [last, version]);

  const onScroll = () => {
    cancelAnimationFrame(frame.current);
    frame.current = requestAnimationFrame(() => {
      const top = scroller.current!.scrollTop;
      setScrollTop(top);
      if (top < ROW_HEIGHT && pendingNew) void showNew();
    });
  };

  const showNew = async () => {
    setPendingNew(0);
    scroller.current?.scrollTo({ top: 0 });
    data.current = new TaskRows();
    await loadMore();
  };

  const set = (k: keyof Filters) => (e: Event) => setFilters({ ...filters, [k]: (e.target as HTMLInputElement).value.trim() });
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
        <label>
          type <input name="type" value={filters.type} onChange={set('type')} placeholder="any" />
        </label>
        <label>
          agent <input name="agentId" value={filters.agentId} onChange={set('agentId')} placeholder="any" />
        </label>
        <span class="muted" data-loaded={d.rows.length}>
          {d.rows.length.toLocaleString()} loaded{d.done ? '' : ', more on scroll'}
        </span>
        {pendingNew > 0 && (
          <button type="button" class="new-rows" onClick={showNew}>
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
              {!d.done && last >= d.rows.length && <div class="vrow muted">loading…</div>}
              {d.done && d.rows.length === 0 && <div class="vrow muted">No tasks match.</div>}
            </div>
          </div>
        </div>
      </div>
    </div>
  );
}
