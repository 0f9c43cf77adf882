import { useEffect, useState } from 'preact/hooks';
import type uPlot from 'uplot';
import { NoCapableAgent, someoneCanTake, useOnlineAgents } from '../agent-refs.js';
import { ApiError, get, query } from '../api.js';
import { num } from '../format.js';
import { useLiveData } from '../hooks.js';
import type { ViewProps } from './view.js';
import { TASK_STATUSES, type FleetStats, type LiveEvent, type Page, type PipelineStats, type Readiness, type Task } from '../types.js';
import { Chart } from './chart.js';

const PIPELINE_POLL_MS = 2_000;
const READINESS_POLL_MS = 2_000;
/** How often the requirements of each queued type are read again (tasks of a type may change them). */
const REQUIREMENTS_POLL_MS = 5_000;

/** Five minutes of one-second samples, kept across visits to the page. */
const HISTORY = 300;
const samples: { t: number; s: FleetStats }[] = [];

function record(s: FleetStats): void {
  const t = Date.now() / 1000;
  // Polling and pushes may both arrive within one second; keep one sample per second.
  if (samples.length && t - samples[samples.length - 1].t < 0.5) samples[samples.length - 1] = { t, s };
  else samples.push({ t, s });
  if (samples.length > HISTORY) samples.splice(0, samples.length - HISTORY);
}

function series(pick: ((s: FleetStats) => number | null)[]): uPlot.AlignedData {
  return [samples.map((x) => x.t), ...pick.map((f) => samples.map((x) => f(x.s)))];
}

/**
 * What is down among fleetd's services, from /readyz (polled: it answers while the database is away,
 * when the stats cannot), or null when everything is up.
 */
function useDegraded(): string | null {
  const [problem, setProblem] = useState<string | null>(null);
  useEffect(() => {
    const poll = () =>
      get<Readiness>('/readyz').then(
        (r) => {
          const down = Object.entries(r.dependencies).filter(([, d]) => !d.up);
          setProblem(down.length === 0 ? null : down.map(([name, d]) => `${name} unavailable since ${new Date(d.since).toLocaleTimeString()} (${d.reason})`).join('; '));
        },
        (err) => setProblem(err instanceof ApiError && err.status === 503 ? err.message : null),
      );
    void poll();
    const timer = setInterval(poll, READINESS_POLL_MS);
    return () => clearInterval(timer);
  }, []);
  return problem;
}

export default function Overview(_props: ViewProps) {
  const degraded = useDegraded();
  const banner = degraded && (
    <p class="panel degraded" data-testid="degraded">
      Degraded: {degraded}
    </p>
  );
  const [stats, setStats] = useState<FleetStats | null>(samples.at(-1)?.s ?? null);
  const accept = (s: FleetStats) => {
    record(s);
    setStats(s);
  };

  useLiveData(
    {
      load: async () => accept(await get<FleetStats>('/v1/stats')),
      intervalMs: 1_000,
      topics: ['stats'],
      onEvents: (events: LiveEvent[]) => {
        const last = events.filter((e) => e.name === 'stats').at(-1);
        if (last) accept(last.data as FleetStats);
      },
    },
    [],
  );

  // Polled rather than pushed: the pipelines topic carries every step of every run, a flood for
  // one number, while a poll costs the same whatever runs.
  const [lane, setLane] = useState<PipelineStats['lane'] | null>(null);
  useEffect(() => {
    const poll = () => get<PipelineStats>('/v1/pipelines/stats').then((p) => setLane(p.lane), () => setLane(null));
    void poll();
    const timer = setInterval(poll, PIPELINE_POLL_MS);
    return () => clearInterval(timer);
  }, []);

  // What the oldest queued task of each queued type requires: the type waits if no online agent has it.
  const online = useOnlineAgents();
  const queuedTypes = stats ? Object.keys(stats.tasks.byType).filter((t) => (stats.tasks.byType[t].queued ?? 0) > 0).sort() : [];
  const [requires, setRequires] = useState(new Map<string, string[]>());
  useEffect(() => {
    if (queuedTypes.length === 0) return;
    const read = () =>
      Promise.all(
        queuedTypes.map((type) => get<Page<Task>>(`/v1/tasks${query({ status: 'queued', type, limit: 1 })}`).then((p) => [type, p.items[0]?.requires] as const)),
      ).then(
        (found) => setRequires(new Map(found.filter((f): f is readonly [string, string[]] => f[1] !== undefined))),
        () => {},
      );
    void read();
    const timer = setInterval(read, REQUIREMENTS_POLL_MS);
    return () => clearInterval(timer);
  }, [queuedTypes.join('\n')]);
  const waitsForAgent = (type: string) => {
    const r = requires.get(type);
    return online !== null && r !== undefined && queuedTypes.includes(type) && !someoneCanTake(online, r) ? r : null;
  };

  if (!stats) return <>{banner}<p class="muted">Loading stats…</p></>;
  const agents = stats.agents.byStatus;
  const priorities = Object.entries(stats.tasks.queueDepthByPriority).sort((a, b) => Number(b[0]) - Number(a[0]));
  const maxDepth = Math.max(1, ...priorities.map(([, n]) => n));
  const types = Object.entries(stats.tasks.byType).sort((a, b) => a[0].localeCompare(b[0]));

  return (
    <div class="overview" data-ready="overview">
      {banner}
      <div class="cards">
        <a class="card" href="#/agents?status=online"><b data-stat="agents-online">{num(agents.online)}</b> agents online</a>
        <a class="card" href="#/agents?status=stale"><b>{num(agents.stale)}</b> stale</a>
        <a class="card" href="#/agents?status=offline"><b>{num(agents.offline)}</b> offline</a>
        {TASK_STATUSES.map((s) => (
          <a class={`card status-${s}`} href={`#/tasks?status=${s}`}>
            <b data-stat={`tasks-${s}`}>{num(stats.tasks.byStatus[s])}</b> {s}
          </a>
        ))}
        <a class="card" href="#/pipelines?status=running" title={lane ? `${lane.stepsRunning} steps running, ${lane.stepsWaitingForLane} waiting for the lane` : ''}>
          <b data-stat="pipeline-runs">{num(lane?.runsActive)}</b> pipeline runs in flight
        </a>
      </div>

      <div class="grid">
        <Chart
          title={`Throughput, per second (1-min mean): ${num(stats.throughput.completedPerSecond1m, 2)} done, ${num(stats.throughput.failedPerSecond1m, 2)} failed`}
          unit="/s"
          series={[{ label: 'completed', color: '#3fb950' }, { label: 'failed', color: '#f85149' }]}
          data={series([(s) => s.throughput.completedPerSecond1m, (s) => s.throughput.failedPerSecond1m])}
          windowSeconds={HISTORY}
        />
        <Chart
          title={`Claim to completion, last 5 min: P50 ${num(stats.latencyMs.p50, 1)} · P95 ${num(stats.latencyMs.p95, 1)} · P99 ${num(stats.latencyMs.p99, 1)} ms`}
          unit="ms"
          series={[{ label: 'P50', color: '#58a6ff' }, { label: 'P95', color: '#d29922' }, { label: 'P99', color: '#f85149' }]}
          data={series([(s) => s.latencyMs.p50, (s) => s.latencyMs.p95, (s) => s.latencyMs.p99])}
          windowSeconds={HISTORY}
        />
        <Chart
          title={`Event-loop lag: P99 ${num(stats.eventLoop.lagP99Ms, 1)} · max ${num(stats.eventLoop.lagMaxMs, 1)} ms`}
          unit="ms"
          series={[{ label: 'P99', color: '#d29922' }, { label: 'max', color: '#f85149' }]}
          data={series([(s) => s.eventLoop.lagP99Ms, (s) => s.eventLoop.lagMaxMs])}
          windowSeconds={HISTORY}
        />
        <section class="panel">
          <h3>Queue depth by priority</h3>
          {priorities.length === 0 ? (
            <p class="muted">Nothing queued.</p>
          ) : (
            <table class="bars">
              {priorities.map(([p, n]) => (
                <tr>
                  <td>{p}</td>
                  <td class="bar-cell"><span class="bar" style={{ width: `${(100 * n) / maxDepth}%` }} /></td>
                  <td class="n">{num(n)}</td>
                </tr>
              ))}
            </table>
          )}
        </section>
      </div>

      <section class="panel">
        <h3>Tasks by type</h3>
        <table class="data">
          <thead>
            <tr>
              <th>type</th>
              {TASK_STATUSES.map((s) => <th class="n">{s}</th>)}
            </tr>
          </thead>
          <tbody>
            {types.map(([type, counts]) => (
              <tr>
                <td>
                  <a href={`#/tasks?type=${encodeURIComponent(type)}`}>{type}</a>
                  {waitsForAgent(type) && <NoCapableAgent requires={waitsForAgent(type)!} />}
                </td>
                {TASK_STATUSES.map((s) => <td class="n">{num(counts[s] ?? 0)}</td>)}
              </tr>
            ))}
          </tbody>
        </table>
      </section>
      <p class="muted">Up {num(stats.uptimeSeconds)} s.</p>
    </div>
  );
}
