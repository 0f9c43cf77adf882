import { useRef, useState } from 'preact/hooks';
import { api, get } from '../api.js';
import { ago, json, time } from '../format.js';
import { useLiveData, useTick } from '../hooks.js';
import type { ViewProps } from './view.js';
import type { LiveEvent, PipelineRun, StepState } from '../types.js';
import { applyRunEvent } from './run-events.js';
import { ApprovalPanel } from './approval.js';

const FINISHED = new Set(['completed', 'failed', 'cancelled']);

/** "1.2 s" from a step's start to its end, or to now while it runs. */
function duration(s: StepState): string {
  if (!s.startedAt) return '—';
  const ms = (s.finishedAt ? Date.parse(s.finishedAt) : Date.now()) - Date.parse(s.startedAt);
  return ms < 1_000 ? `${ms} ms` : `${(ms / 1_000).toFixed(1)} s`;
}

/** One run: its input, each step's status, attempts, timing, output or error, and its result. */
export default function RunDetail({ route }: ViewProps) {
  const id = route.view === 'run' ? route.id : 0;
  const [run, setRun] = useState<PipelineRun | null>(null);
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);
  /** One list per load in flight, of the events that arrive meanwhile: they go over its answer. */
  const arriving = useRef(new Set<LiveEvent[]>());
  useTick(1_000);

  const load = async () => {
    const meanwhile: LiveEvent[] = [];
    arriving.current.add(meanwhile);
    try {
      const { run: loaded } = await get<{ run: PipelineRun }>(`/v1/pipelines/runs/${id}`);
      setRun(meanwhile.reduce(applyRunEvent, loaded));
      setError('');
    } catch (err) {
      setError((err as Error).message);
    } finally {
      arriving.current.delete(meanwhile);
    }
  };

  useLiveData(
    {
      load,
      intervalMs: 2_000,
      topics: [`run:${id}`],
      loadWhenSubscribed: true,
      onEvents: (events: LiveEvent[]) => {
        // The step's new status at once; its output (not in events) with the next load.
        for (const list of arriving.current) list.push(...events);
        setRun((r) => r && events.reduce(applyRunEvent, r));
        return true;
      },
    },
    [id],
  );

  const cancel = async () => {
    setBusy(true);
    try {
      setRun((await api<{ run: PipelineRun }>('POST', `/v1/pipelines/runs/${id}/cancel`)).run);
      setError('');
    } catch (err) {
      setError((err as Error).message);
    } finally {
      setBusy(false);
    }
  };

  if (!run) return error ? <p class="error">{error}</p> : <p class="muted">Loading run {id}…</p>;
  const done = run.steps.filter((s) => s.status === 'completed').length;
  return (
    <div class="detail" data-run-status={run.status}>
      <h2>
        Run {run.id} <span class="mono">{run.pipeline}</span>{' '}
        {run.pipelineVersion !== null && <span class="small muted" data-pipeline-version={run.pipelineVersion} title="the version of the pipeline this run started with, and keeps">version {run.pipelineVersion}</span>}{' '}
        <span class={`pill run-${run.status}`} data-status={run.status}>{run.status}</span>
        <span class="small muted">{done} of {run.steps.length} steps done</span>
      </h2>
      <div class="actions">
        {!FINISHED.has(run.status) && <button class="danger" disabled={busy} onClick={cancel}>Cancel run</button>}
      </div>
      {error && <p class="error">{error}</p>}
      {run.steps
        .filter((s) => s.status === 'waiting')
        .map((s) => (
          <ApprovalPanel key={s.name} runId={run.id} step={s} onDecided={setRun} />
        ))}
      <section class="panel">
        <h3>Steps</h3>
        <table class="data">
          <thead>
            <tr><th>step</th><th>status</th><th class="n">attempts</th><th>started</th><th class="n">took</th><th>next attempt</th></tr>
          </thead>
          <tbody>
            {run.steps.map((s) => (
              <tr key={s.name} data-step={s.name} data-step-status={s.status}>
                <td class="mono">{s.name}</td>
                <td><span class={`pill step-${s.status}`}>{s.status}</span></td>
                <td class="n">{s.attempts}</td>
                <td title={time(s.startedAt)}>{ago(s.startedAt)}</td>
                <td class="n">{duration(s)}</td>
                <td>{s.nextAttemptAt ? ago(s.nextAttemptAt) : '—'}</td>
              </tr>
            ))}
          </tbody>
        </table>
        {run.steps.map((s) =>
          s.output !== null || s.error !== null ? (
            <details data-step-detail={s.name}>
              <summary class="mono">{s.name}: {s.error !== null && s.status !== 'completed' ? 'error' : 'output'}</summary>
              <pre class={s.status === 'completed' ? '' : 'error'}>{json(s.status === 'completed' ? s.output : s.error)}</pre>
            </details>
          ) : null,
        )}
      </section>
      <div class="grid">
        <section class="panel">
          <h3>Input</h3>
          <pre data-testid="run-input">{json(run.input)}</pre>
        </section>
        <section class="panel">
          <h3>{run.status === 'failed' ? 'Error' : 'Output'}</h3>
          <pre class={run.status === 'failed' ? 'error' : ''} data-testid="run-output">
            {run.status === 'failed' ? json(run.error) : FINISHED.has(run.status) ? json(run.output) : '—'}
          </pre>
          <p class="muted">
            created {time(run.createdAt)}
            {run.finishedAt ? `, finished ${time(run.finishedAt)}` : ''}
            {run.idempotencyKey ? `, key ${run.idempotencyKey}` : ''}
          </p>
        </section>
      </div>
    </div>
  );
}
