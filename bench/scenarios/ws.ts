/**
 * `npm run bench -- ws [--agents 1000] [--rate 2000] [--seconds 10] [--observers 50] [--credit 4] [--baseline 1]`
 *
 * N agents connected over WebSocket (in a separate process) receive tasks submitted at a steady
 * rate (in batches every 10 ms, from this process). Reports submit-to-agent dispatch latency, tasks
 * per second, the server's RSS idle, with the agents connected and at its peak, and the delivery
 * latency of stats snapshots to M observer sockets (which includes the event batch window).
 * `submit ack` is the submit request's own round trip: the part of dispatch before the agent's turn.
 * `server cpu µs/task` is the servers' CPU (user + system) from the first submit to the last
 * completion, over the tasks completed: steadier than a latency on a shared machine. `loop delay`
 * is the server's event-loop delay over the same time (the worst node's): its P99, and its longest
 * stall, which every task in flight then waits out.
 * With --baseline 1 (the default) the same load then runs against a fresh server with the agents
 * long-polling over HTTP instead, and the ratios of the two are reported: on a shared machine the
 * ratio says more than either absolute figure.
 */
import { fork } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BENCH_ADMIN_KEY, authHeaders, flags, loopDelayOf, metricsOf, percentile, report, startServerProcess, type Row, type ServerProcess } from '../lib.js';

const here = dirname(fileURLToPath(import.meta.url));
const now = () => performance.timeOrigin + performance.now();

/**
 * The servers' event-loop delay since the last call (prom-client's figures, which each scrape of
 * /metrics resets): the worst P99 and the longest stall over the nodes (loopDelayOf).
 */
async function loopDelay(servers: ServerProcess[]): Promise<{ p99: number; max: number }> {
  const worst = { p99: 0, max: 0 };
  for (const server of servers) {
    const delay = loopDelayOf(await metricsOf(server));
    worst.p99 = Math.max(worst.p99, delay.p99);
    worst.max = Math.max(worst.max, delay.max);
  }
  return worst;
}

async function post(url: string, body: unknown): Promise<any> {
  const res = await fetch(url, { method: 'POST', headers: { ...authHeaders, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const json = await res.json();
  if (!res.ok) throw new Error(`${url}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

export type Flags = Record<'agents' | 'rate' | 'seconds' | 'observers' | 'credit' | 'baseline', number>;

/** Where a phase runs: the settings of its server processes and how many of them (one cluster). */
export interface Target {
  env?: Record<string, string>;
  nodes?: number;
  /** Tasks a submit request carries, each sent once that many are due (by default a hundredth of the rate, every 10 ms). */
  batch?: number;
}

export default async function ws(args: string[]): Promise<void> {
  const f = flags(args, { agents: 1000, rate: 2000, seconds: 10, observers: 50, credit: 4, baseline: 1 }) as Flags;
  const push = await phase('ws', f);
  const rows = [push];
  if (f.baseline) {
    const poll = await phase('poll', f);
    rows.push(poll);
    const ratio = (k: string) => Math.round(((poll[k] as number) / (push[k] as number)) * 100) / 100;
    rows.push({ transport: 'poll ÷ ws', 'tasks/s': ratio('tasks/s'), 'dispatch p50 ms': ratio('dispatch p50 ms'), 'dispatch p99 ms': ratio('dispatch p99 ms') });
  }
  report('ws', rows, { flags: f });
}

/**
 * One run: agents (and observers) spread over the target's nodes, tasks submitted to the nodes in
 * turn. RSS figures are the sum over the nodes.
 */
export async function phase(transport: 'ws' | 'poll', f: Flags, target: Target = {}): Promise<Row> {
  process.stdout.write(`\n— ${transport === 'ws' ? 'WebSocket push' : 'baseline: HTTP long-poll'} —\n`);
  const servers: ServerProcess[] = [];
  // The first node migrates; the others find the schema ready.
  for (let i = 0; i < (target.nodes ?? 1); i++) {
    servers.push(
      await startServerProcess({
        FLEETD_WS_MAX_CONNECTIONS: String(f.agents + f.observers + 100),
        // The observers share the bench's one API key.
        FLEETD_MAX_CONNECTIONS_PER_KEY: String(f.observers + 100),
        ...target.env,
      }),
    );
  }
  const [server] = servers;
  const rss = () => servers.reduce((mb, s) => mb + s.rssMb(), 0);
  const cpu = () => servers.reduce((ms, s) => ms + s.cpuMs(), 0);
  const work = mkdtempSync(join(tmpdir(), 'fleetd-bench-ws-'));
  try {
    const rssIdle = rss();
    const agents: { id: string; token: string }[] = [];
    for (let i = 0; i < f.agents; i += 1000) {
      const batch = Array.from({ length: Math.min(1000, f.agents - i) }, (_, j) => ({ name: `bench-${i + j}`, capabilities: ['bench'], maxConcurrency: f.credit }));
      const { items } = await post(`${server.url}/v1/agents/batch`, { agents: batch });
      for (const { agent, token } of items) agents.push({ id: agent.id, token });
    }
    const agentsFile = join(work, 'agents.json');
    writeFileSync(agentsFile, JSON.stringify(agents));

    process.stdout.write(`connecting ${f.agents} agents and ${f.observers} observers…\n`);
    const connectStarted = Date.now();
    const worker = fork(join(here, '../workers/ws-agents.ts'), [servers.map((s) => s.url).join(','), agentsFile, String(f.observers), String(f.credit), transport, BENCH_ADMIN_KEY], {
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    // Every message is queued as it comes, so none is lost between two waits; a worker that dies fails the run loudly.
    const inbox: ({ type: string } & Record<string, any>)[] = [];
    let wake = () => {};
    let exited: string | undefined;
    worker.on('message', (m: { type: string }) => (inbox.push(m), wake()));
    worker.once('exit', (code, signal) => ((exited = `the agent worker exited (code ${code}, signal ${signal})`), wake()));
    const next = async (type: string) => {
      for (;;) {
        const i = inbox.findIndex((m) => m.type === type);
        if (i >= 0) return inbox.splice(i, 1)[0];
        if (exited) throw new Error(exited);
        await new Promise<void>((resolve) => (wake = resolve));
      }
    };
    const ready = await next('ready');
    const connectSeconds = (Date.now() - connectStarted) / 1000;
    const rssConnected = rss();
    process.stdout.write(`${ready.agents} agents and ${f.observers} observers ready in ${connectSeconds.toFixed(1)} s; server RSS ${rssConnected} MB\n`);

    let rssPeak = rssConnected;
    const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, rss())), 250);
    worker.send({ type: 'measure' });
    const perBatch = target.batch ?? Math.max(1, Math.round(f.rate / 100));
    const total = Math.round(f.rate * f.seconds);
    let submitted = 0;
    let batches = 0;
    let errors = 0;
    const acknowledged: number[] = [];
    const inFlight = new Set<Promise<void>>();
    await loopDelay(servers);
    const started = Date.now();
    const cpuStarted = cpu();
    const progress = setInterval(() => process.stdout.write(`  ${((Date.now() - started) / 1000).toFixed(0)} s: ${submitted} submitted, RSS ${rss()} MB\n`), 2_000);
    while (submitted < total) {
      const due = Math.min(total, Math.floor(((Date.now() - started) / 1000) * f.rate) + perBatch);
      while (submitted < due && inFlight.size < 16 && (target.batch === undefined || due - submitted >= perBatch || due === total)) {
        const n = Math.min(perBatch, due - submitted);
        submitted += n;
        const sent = now();
        const tasks = Array.from({ length: n }, () => ({ type: 'bench', payload: { t: sent } }));
        const node = servers[batches++ % servers.length];
        const p = post(`${node.url}/v1/tasks/batch`, { tasks }).then(
          () => void acknowledged.push(now() - sent),
          () => void errors++,
        );
        inFlight.add(p);
        void p.finally(() => inFlight.delete(p));
      }
      await new Promise((r) => setTimeout(r, 10));
    }
    await Promise.all(inFlight);
    clearInterval(progress);
    let completed = 0;
    const drainDeadline = Date.now() + 60_000;
    while (completed < submitted - errors && Date.now() < drainDeadline) {
      worker.send({ type: 'completed' });
      completed = (await next('completed')).completed;
      if (completed < submitted - errors) await new Promise((r) => setTimeout(r, 100));
    }
    const elapsed = (Date.now() - started) / 1000;
    clearInterval(sampler);
    const cpuUsed = cpu() - cpuStarted;
    const loop = await loopDelay(servers);
    worker.send({ type: 'finish' });
    const results = await next('results');
    if (!exited) await once(worker, 'exit');

    const ms = (v: number) => Math.round(v * 100) / 100;
    return {
      transport,
      agents: f.agents,
      'rate/s': f.rate,
      submitted,
      errors,
      completed: results.completed,
      'tasks/s': Math.round(results.completed / elapsed),
      'dispatch p50 ms': ms(percentile(results.dispatch, 50)),
      'dispatch p95 ms': ms(percentile(results.dispatch, 95)),
      'dispatch p99 ms': ms(percentile(results.dispatch, 99)),
      'submit ack p50 ms': ms(percentile(acknowledged, 50)),
      'server cpu µs/task': Math.round((cpuUsed * 1000) / Math.max(1, results.completed)),
      'loop delay p99 ms': ms(loop.p99),
      'loop delay max ms': ms(loop.max),
      observers: f.observers,
      'observer p50 ms': ms(percentile(results.observed, 50)),
      'observer p99 ms': ms(percentile(results.observed, 99)),
      'rss idle MB': rssIdle,
      'rss connected MB': rssConnected,
      'rss peak MB': rssPeak,
      'connect s': ms(connectSeconds),
    };
  } finally {
    await Promise.all(servers.map((s) => s.stop()));
    rmSync(work, { recursive: true, force: true });
  }
}
