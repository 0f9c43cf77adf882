import { useState } from 'preact/hooks';
import { AgentRef, NoCapableAgent, someoneCanTake, useOnlineAgents } from '../agent-refs.js';
import { api, get } from '../api.js';
import { ago, json, time } from '../format.js';
import { useLiveData } from '../hooks.js';
import type { ViewProps } from './view.js';
import type { LiveEvent, Page, Task } from '../types.js';
import { LiveLog, ProgressBar, useTaskActivity } from './task-activity.js';

const ACTIVE = new Set(['waiting', 'scheduled', 'queued', 'leased']);
const RETRYABLE = new Set(['dead', 'cancelled']);

/** What the task went through, from its own times plus the events this page saw live. */
function timeline(task: Task, seen: LiveEvent[]): { at: string; what: string }[] {
  const steps: { at: string; what: string }[] = [{ at: task.createdAt, what: 'submitted' }];
  if (task.runAt !== task.createdAt) steps.push({ at: task.runAt, what: 'runs at' });
  if (task.claimedAt) steps.push({ at: task.claimedAt, what: `claimed (attempt ${task.attempts})` });
  if (task.leaseExpiresAt && task.status === 'leased') steps.push({ at: task.leaseExpiresAt, what: 'lease expires' });
  for (const e of seen) steps.push({ at: e.at, what: e.name.replace('task.', '') + ('reason' in e.data ? ` (${e.data.reason})` : '') });
  if (task.completedAt) steps.push({ at: task.completedAt, what: task.status });
  else if (!ACTIVE.has(task.status)) steps.push({ at: task.updatedAt, what: task.status });
  return steps.sort((a, b) => Date.parse(a.at) - Date.parse(b.at));
}

export default function TaskDetail({ route }: ViewProps) {
  const id = route.view === 'task' ? route.id : 0;
  const [task, setTask] = useState<Task | null>(null);
  const [error, setError] = useState('');
  const [seen, setSeen] = useState<LiveEvent[]>([]);
  const [busy, setBusy] = useState(false);
  const [reason, setReason] = useState('');
  const [children, setChildren] = useState<Page<Task> | null>(null);
  const online = useOnlineAgents();
  const activity = useTaskActivity(id);

  const load = async () => {
    try {
      const [loaded, kids] = await Promise.all([get<Task>(`/v1/tasks/${id}`), get<Page<Task>>(`/v1/tasks/${id}/children?limit=50`)]);
      setTask(loaded);
      setChildren(kids);
      setError('');
      // Polling, or back after the socket was away: what was reported meanwhile.
      void activity.reload();
    } catch (err) {
      setError((err as Error).message);
    }
  };

  useLiveData(
    {
      load,
      intervalMs: 2_000,
      topics: [`task:${id}`],
      onEvents: (events) => {
        activity.onEvents(events);
        // A streaming agent sends many activity events: only the task's own events change the task.
        const changes = events.filter((e) => e.name !== 'task.activity');
        if (changes.length === 0) return;
        setSeen((s) => [...s, ...changes].slice(-50));
        void load();
      },
    },
    [id],
  );

  const act = async (method: string, path: string) => {
    setBusy(true);
    try {
      setTask(await api<Task>(method, path));
      setError('');
    } catch (err) {
      setError((err as Error).message);
    } finally {
      setBusy(false);
    }
  };

  if (!task) return error ? <p class="error">{error}</p> : <p class="muted">Loading task {id}…</p>;
  return (
    <div class="detail" data-task-status={task.status}>
      <h2>
        Task {task.id} <span class="mono">{task.type}</span>{' '}
        <span class={`pill status-${task.status}`} data-status={task.status}>{task.status}</span>
      </h2>
      <div class="actions">
        {ACTIVE.has(task.status) && (
          <>
            <input name="cancelReason" placeholder="reason (told to the agent)" maxLength={500} value={reason} onInput={(e) => setReason(e.currentTarget.value)} />
            <button
              class="danger"
              disabled={busy}
              onClick={() => act('DELETE', `/v1/tasks/${task.id}${reason.trim() ? `?reason=${encodeURIComponent(reason.trim())}` : ''}`)}
            >
              Cancel task
            </button>
          </>
        )}
        {RETRYABLE.has(task.status) && (
          <button disabled={busy} onClick={() => act('POST', `/v1/tasks/${task.id}/retry`)}>Retry task</button>
        )}
      </div>
      {error && <p class="error">{error}</p>}
      <div class="grid">
        <section class="panel">
          <h3>Task</h3>
          <dl>
            <dt>namespace</dt><dd data-testid="namespace">{task.namespace}</dd>
            <dt>priority</dt><dd>{task.priority}</dd>
            <dt>attempts</dt><dd>{task.attempts} of {task.maxAttempts}</dd>
            <dt>requires</dt>
            <dd>
              {task.requires.join(', ') || '—'}
              {task.status === 'queued' && online && !someoneCanTake(online, task.requires) && <NoCapableAgent requires={task.requires} />}
            </dd>
            <dt>agent</dt><dd><AgentRef id={task.agentId} /></dd>
            <dt>lease</dt><dd>{task.leaseMs} ms{task.leaseExpiresAt ? `, expires ${ago(task.leaseExpiresAt)}` : ''}</dd>
            <dt>backoff</dt><dd>{task.backoffMs} ms</dd>
            <dt>idempotency key</dt><dd class="mono">{task.idempotencyKey ?? '—'}</dd>
            <dt>timeouts</dt>
            <dd data-testid="timeouts">
              {task.executionTimeoutMs === null ? 'no execution limit' : `runs at most ${task.executionTimeoutMs} ms`}
              {task.scheduleTimeoutMs === null ? '' : `, expires unclaimed after ${task.scheduleTimeoutMs} ms`}
            </dd>
            <dt>tags</dt>
            <dd data-testid="tags">
              {task.tags.length === 0 ? '—' : task.tags.map((tag) => <span class="pill tag">{tag}</span>)}
            </dd>
          </dl>
        </section>
        <section class="panel">
          <h3>Timeline</h3>
          <ol class="timeline">
            {timeline(task, seen).map((s) => (
              <li><time title={time(s.at)}>{time(s.at)}</time> {s.what}</li>
            ))}
          </ol>
        </section>
      </div>
      <ProgressBar progress={activity.progress} />
      <LiveLog entries={activity.entries} dropped={activity.dropped} />
      {(task.parentId !== null || task.dependencyCount > 0 || (children?.items.length ?? 0) > 0) && (
        <section class="panel" data-testid="workflow">
          <h3>Workflow</h3>
          <dl>
            <dt>parent</dt>
            <dd>{task.parentId === null ? '—' : <a href={`#/tasks/${task.parentId}`}>{task.parentId}</a>}</dd>
            <dt>depends on</dt>
            <dd data-testid="dependencies">
              {task.dependencyCount === 0
                ? '—'
                : `${task.dependencyCount} tasks, ${task.dependenciesPending} not finished`}
              {(task.dependencies ?? []).slice(0, 50).map((d) => (
                <span>
                  {' '}
                  <a href={`#/tasks/${d.id}`} class={`status-${d.status}`} title={d.status}>{d.id}</a>
                </span>
              ))}
            </dd>
            <dt>children</dt>
            <dd data-testid="children">
              {(children?.items.length ?? 0) === 0 ? '—' : `${children!.items.length}${children!.nextCursor ? '+' : ''}`}
              {(children?.items ?? []).map((c) => (
                <span>
                  {' '}
                  <a href={`#/tasks/${c.id}`} class={`status-${c.status}`} title={`${c.type}: ${c.status}`}>{c.id}</a>
                </span>
              ))}
            </dd>
          </dl>
        </section>
      )}
      <section class="panel">
        <h3>Payload</h3>
        <pre data-testid="payload">{json(task.payload)}</pre>
      </section>
      {Object.keys(task.metadata).length > 0 && (
        <section class="panel">
          <h3>Metadata</h3>
          <pre data-testid="metadata">{json(task.metadata)}</pre>
        </section>
      )}
      {task.result !== null && task.result !== undefined && (
        <section class="panel">
          <h3>Result</h3>
          <pre data-testid="result">{json(task.result)}</pre>
        </section>
      )}
      {task.error !== null && task.error !== undefined && (
        <section class="panel">
          <h3>Error</h3>
          <pre class="error" data-testid="error">{json(task.error)}</pre>
        </section>
      )}
    </div>
  );
}
