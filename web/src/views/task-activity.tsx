import { useEffect, useRef, useState } from 'preact/hooks';
import { get } from '../api.js';
import { time } from '../format.js';
import type { ActivityEntry, LiveEvent, TaskActivity } from '../types.js';

type Progress = Extract<ActivityEntry, { kind: 'progress' }>;

/**
 * A task's progress and live log, kept from GET /v1/tasks/:id/logs and then from the task.activity
 * events of its topic. Entries are taken in sequence order only: an event ahead of what is shown (one
 * missed while the socket was away) makes it read the missing ones from the API first.
 */
export function useTaskActivity(id: number): { progress: Progress | null; entries: ActivityEntry[]; dropped: number; onEvents: (events: LiveEvent[]) => void; reload: () => Promise<void> } {
  const [state, setState] = useState<{ progress: Progress | null; entries: ActivityEntry[]; dropped: number }>({ progress: null, entries: [], dropped: 0 });
  const lastSeq = useRef(0);
  const loading = useRef<Promise<void> | null>(null);

  const take = (entries: ActivityEntry[], tail?: TaskActivity) => {
    const fresh = entries.filter((e) => e.seq > lastSeq.current);
    if (fresh.length > 0) lastSeq.current = fresh[fresh.length - 1].seq;
    setState((s) => {
      // The page keeps what the server keeps, roughly: the newest 2,000 entries.
      const kept = [...s.entries, ...fresh.filter((e) => e.kind !== 'progress')].slice(-2_000);
      const progress = [...fresh].reverse().find((e): e is Progress => e.kind === 'progress') ?? tail?.progress ?? s.progress;
      const retained = tail ? tail.logLines - tail.entries.filter((e) => e.kind === 'log').length : s.dropped;
      return { progress, entries: kept, dropped: tail ? Math.max(0, retained) : s.dropped };
    });
  };

  const reload = () => {
    loading.current ??= (async () => {
      try {
        for (;;) {
          const tail = await get<TaskActivity>(`/v1/tasks/${id}/logs?since=${lastSeq.current}&limit=5000`);
          // The whole tail in one answer tells how many lines were dropped before it.
          take(tail.entries, lastSeq.current === 0 && !tail.more ? tail : undefined);
          if (!tail.more) return;
        }
      } finally {
        loading.current = null;
      }
    })();
    return loading.current;
  };

  useEffect(() => {
    lastSeq.current = 0;
    setState({ progress: null, entries: [], dropped: 0 });
    void reload();
  }, [id]);

  const onEvents = (events: LiveEvent[]) => {
    for (const e of events) {
      if (e.name !== 'task.activity') continue;
      const entries = e.data.entries;
      if (entries.length > 0 && entries[0].seq > lastSeq.current + 1) void reload();
      else take(entries);
    }
  };
  return { ...state, onEvents, reload };
}

export function ProgressBar({ progress }: { progress: Progress | null }) {
  if (!progress) return null;
  const percent = Math.round(progress.progress * 100);
  return (
    <section class="panel" data-testid="progress" data-progress={progress.progress}>
      <h3>Progress</h3>
      <progress max={1} value={progress.progress} aria-label="progress" />{' '}
      <strong>{percent}%</strong> {progress.message && <span class="muted">{progress.message}</span>}
    </section>
  );
}

/** The log lines and the streamed output, in the order they were reported, following as they arrive. */
export function LiveLog({ entries, dropped }: { entries: ActivityEntry[]; dropped: number }) {
  const box = useRef<HTMLPreElement>(null);
  useEffect(() => {
    const el = box.current;
    // Follows the end unless the operator scrolled up to read.
    if (el && el.scrollHeight - el.scrollTop - el.clientHeight < 80) el.scrollTop = el.scrollHeight;
  }, [entries.length]);
  if (entries.length === 0) return null;
  return (
    <section class="panel">
      <h3>Live log</h3>
      {dropped > 0 && <p class="muted">{dropped} older lines are no longer kept.</p>}
      <pre class="live-log" data-testid="live-log" ref={box}>
        {entries.map((e) =>
          e.kind === 'log' ? (
            <div class={`log-line level-${e.level}`} data-seq={e.seq} title={time(e.at)}>
              [{e.level}] {e.message}
            </div>
          ) : e.kind === 'output' ? (
            <span class="output" data-seq={e.seq}>{e.text}</span>
          ) : null,
        )}
      </pre>
    </section>
  );
}
