import { useEffect, useRef, useState } from 'preact/hooks';
import { AgentRef, NoCapableAgent, someoneCanTake, useOnlineAgents } from '../agent-refs.js';
import { get, query } from '../api.js';
import { ago } from '../format.js';
import { useLiveData, useTick } from '../hooks.js';
import { useNamespaces } from '../namespaces.js';
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

const TERMINAL: ReadonlySet<string> = new Set(['completed', 'dead', 'cancelled']);
/**
 * Within one attempt a task goes leased -> scheduled (retry after backoff) -> queued, or back to
 * queued when its lease is rescued; a claim starts the next attempt.
 */
const STEP_IN_ATTEMPT: Record<string, number> = { leased: 0, scheduled: 1, queued: 2 };

/**
 * Whether `b` is a later state of the task than `a`. Events may arrive in any order and batching
 * (and several changes can share one millisecond of updatedAt), so the state alone decides: the
 * later update; at the same time, a final state over any other, then the later attempt, then the
 * later step within it, then the later lease.
 */
export function isLaterState(a: TaskSummary, b: TaskSummary): boolean {
  const at = Date.parse(b.updatedAt) - Date.parse(a.updatedAt);
  if (at !== 0) return at > 0;
  const final = Number(TERMINAL.has(b.status)) - Number(TERMINAL.has(a.status));
  if (final !== 0) return final > 0;
  if (b.attempts !== a.attempts) return b.attempts > a.attempts;
  const step = (STEP_IN_ATTEMPT[b.status] ?? 0) - (STEP_IN_ATTEMPT[a.status] ?? 0);
  if (step !== 0) return step > 0;
  return (b.leaseExpiresAt ?? '') >= (a.leaseExpiresAt ?? '');
}

/** The newest state of each task that events have reported, bounded: older entries are dropped first. */
const SEEN_LIMIT = 10_000;

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
  /** Set once the first page is in: until then, events are only remembered in `seen`. */
  firstPageIn = false;
  /**
   * The newest state events have reported of each recent task, whether or not it has a row: an
   * event that arrives after a newer one (or before the row exists) never brings back an old state.
   */
  readonly seen = new Map<number, TaskSummary>();
  /** Cancels this filter's requests when it is replaced. */
  readonly requests = new AbortController();

  /** Rows newer than what is loaded, counted while the operator is scrolled down. */
  readonly pending = new Set<number>();

  constructor(readonly filters: Filters) {}

  append(items: TaskSummary[]): void {
    for (const t of items) {
      if (this.index.has(t.id)) continue;
      this.index.set(t.id, this.rows.length);
      this.rows.push(this.latest(t));
    }
  }

  prepend(items: TaskSummary[]): void {
    const fresh = items.filter((t) => !this.index.has(t.id)).map((t) => this.latest(t));
    if (!fresh.length) return;
    this.rows = [...fresh, ...this.rows];
    this.index = new Map(this.rows.map((t, i) => [t.id, i]));
  }

  /** Updates a loaded row in place, unless it holds a later state of the task already. */
  update(t: TaskSummary): void {
    const i = this.index.get(t.id);
    if (i !== undefined && isLaterState(this.rows[i], t)) this.rows[i] = { ...this.rows[i], ...t };
  }

  /** A task as a page holds it, or the later state an event has reported of it since. */
  private latest(t: TaskSummary): TaskSummary {
    const known = this.seen.get(t.id);
    return known && isLaterState(t, known) ? { ...t, ...known } : t;
  }

  /** Remembers what an event says of a task; returns the newest state known of it. */
  remember(t: TaskSummary): TaskSummary {
    const known = this.seen.get(t.id);
    const newest = known && !isLaterState(known, t) ? known : t;
    this.seen.delete(t.id);
    this.seen.set(t.id, newest);
    if (this.seen.size > SEEN_LIMIT) this.seen.delete(this.seen.keys().next().value!);
    return newest;
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
  const online = useOnlineAgents();
  const { column: namespaceColumn } = useNamespaces();

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
      if (!d.firstPageIn) {
        d.firstPageIn = true;
        // Events that arrived before the page: the page may be older or newer than each of them.
        apply(d, [...d.seen.values()]);
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
    if (!d.firstPageIn) return loadMore(d);
    const page = await fetchPage(d, null, REFRESH_SIZE);
    if (d !== data.current) return;
    const newer = page.items.filter((t) => t.id > d.newestId);
    if (newer.length === REFRESH_SIZE && page.nextCursor) {
      // More arrived than one refresh reads: the rows in between are unknown, so start again.
      if (atTop()) return restart(d.filters);
      countPending(d, newer);
    } else {
      for (const t of page.items) d.update(t);
      takeNewer(d, newer);
    }
    bump();
  };

  /**
   * Brings the rows up to the newest known state of these tasks. A task newer than every row is
   * added (in its newest state, whichever event reported it) if that state matches the filters.
   */
  const apply = (d: TaskRows, tasks: TaskSummary[]) => {
    const created = new Map<number, TaskSummary>();
    for (const t of tasks) {
      const newest = d.seen.get(t.id) ?? t;
      if (d.index.has(t.id)) d.update(newest);
      else if (t.id > d.newestId) created.set(t.id, newest);
    }
    const fresh = [...created.values()].filter((t) => matches(t, d.filters)).sort((a, b) => b.id - a.id);
    takeNewer(d, fresh);
  };

  const countPending = (d: TaskRows, newer: TaskSummary[]) => {
    for (const t of newer) if (d.pending.size < SEEN_LIMIT) d.pending.add(t.id);
    setPendingNew(d.pending.size);
  };
  const atTop = () => (scroller.current?.scrollTop ?? 0) < ROW_HEIGHT;
  /** New rows go in at once when the operator is at the top; otherwise they are counted, not jumped in. */
  const takeNewer = (d: TaskRows, newer: TaskSummary[]) => {
    if (!newer.length) return;
    if (!atTop()) countPending(d, newer);
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
        const changed: TaskSummary[] = [];
        for (const e of events) if ('task' in e.data) changed.push(d.remember(e.data.task));
        if (!d.firstPageIn) return;
        apply(d, changed);
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
    if (loadedOnce.current && d.firstPageIn && !d.done && !d.loading && last > d.rows.length - PREFETCH_ROWS) void loadMore();
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
      <div class={namespaceColumn ? 'vtable with-namespace' : 'vtable'}>
        <div class="vrow vhead">
          <span>id</span><span>type</span><span>status</span><span>priority</span><span>attempts</span><span>agent</span><span>created</span><span>updated</span>
          {namespaceColumn && <span>namespace</span>}
        </div>
        <div class="vscroll" ref={scroller} onScroll={onScroll} data-testid="task-scroller">
          <div style={{ height: `${total * ROW_HEIGHT}px`, position: 'relative' }}>
            <div style={{ transform: `translateY(${first * ROW_HEIGHT}px)` }}>
              {rows.map((t) => (
                <a class="vrow" href={`#/tasks/${t.id}`} key={t.id} data-task-id={t.id}>
                  <span>{t.id}</span>
                  <span>{t.type}</span>
                  <span>
                    <span class={`pill status-${t.status}`} data-status={t.status}>{t.status}</span>
                    {t.status === 'queued' && online && !someoneCanTake(online, t.requires) && <NoCapableAgent requires={t.requires} />}
                  </span>
                  <span>{t.priority}</span>
                  <span>{t.attempts}/{t.maxAttempts}</span>
                  <span><AgentRef id={t.agentId} link={false} /></span>
                  <span>{ago(t.createdAt)}</span>
                  <span>{ago(t.updatedAt)}</span>
                  {namespaceColumn && <span data-namespace={t.namespace}>{t.namespace}</span>}
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
