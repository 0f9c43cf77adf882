import { useState } from 'preact/hooks';
import { api, get, query } from '../api.js';
import { ago, time } from '../format.js';
import { useLiveData, useTick } from '../hooks.js';
import type { ViewProps } from './view.js';
import type { Page, Schedule } from '../types.js';

/** Recurring schedules, oldest first: when each fires next, what it last submitted; pause and resume. */
export default function Schedules(_props: ViewProps) {
  const [schedules, setSchedules] = useState<Schedule[] | null>(null);
  const [error, setError] = useState('');
  const [busy, setBusy] = useState('');
  useTick(1_000);

  const load = async () => {
    try {
      const all: Schedule[] = [];
      let cursor: string | undefined;
      do {
        const page: Page<Schedule> = await get<Page<Schedule>>(`/v1/schedules${query({ limit: 1000, cursor })}`);
        all.push(...page.items);
        cursor = page.nextCursor ?? undefined;
      } while (cursor);
      setSchedules(all);
      setError('');
    } catch (err) {
      setError((err as Error).message);
    }
  };

  // A fire is a task created: the list is loaded again then (at most once a second), and polled while the stream is down.
  useLiveData({ load, intervalMs: 2_000, topics: ['tasks'], onEvents: (events) => events.some((e) => e.name === 'task.created') }, []);

  const act = async (name: string, action: 'pause' | 'resume') => {
    setBusy(name);
    try {
      const updated = await api<Schedule>('POST', `/v1/schedules/${encodeURIComponent(name)}/${action}`);
      setSchedules((list) => (list ?? []).map((s) => (s.name === name ? updated : s)));
      setError('');
    } catch (err) {
      setError((err as Error).message);
    } finally {
      setBusy('');
    }
  };

  return (
    <div>
      {error && <p class="error">{error}</p>}
      <table class="data">
        <thead>
          <tr><th>name</th><th>cron</th><th>time zone</th><th>task type</th><th>next fire</th><th>last fire</th><th>last task</th><th>overlap</th><th>catch up</th><th></th></tr>
        </thead>
        <tbody>
          {(schedules ?? []).map((s) => (
            <tr key={s.name} data-schedule={s.name} data-paused={String(s.paused)}>
              <td class="mono">{s.name}</td>
              <td class="mono">{s.cron}</td>
              <td>{s.timezone}</td>
              <td class="mono">{String(s.task.type ?? '')}</td>
              <td data-testid="next-fire" title={s.nextFires[0] ? time(s.nextFires[0]) : ''}>{s.paused ? 'paused' : s.nextFires[0] ? `${time(s.nextFires[0])} (${ago(s.nextFires[0])})` : '—'}</td>
              <td title={s.lastFireAt ? time(s.lastFireAt) : ''}>{s.lastFireAt ? ago(s.lastFireAt) : '—'}</td>
              <td>{s.lastTaskId === null ? '—' : <a href={`#/tasks/${s.lastTaskId}`}>{s.lastTaskId}</a>}</td>
              <td>{s.overlap}</td>
              <td>{s.catchUp}</td>
              <td>
                <button type="button" disabled={busy === s.name} onClick={() => act(s.name, s.paused ? 'resume' : 'pause')}>
                  {s.paused ? 'Resume' : 'Pause'}
                </button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {schedules?.length === 0 && <p class="muted">No schedules yet: create one with POST /v1/schedules.</p>}
    </div>
  );
}
