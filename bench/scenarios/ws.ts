/**
 * `npm run bench -- ws [--agents 1000] [--rate 2000] [--seconds 10] [--observers 50] [--credit 4]`
 *
 * N agents connected over WebSocket (in a separate process) receive tasks submitted at a steady
 * rate (in batches every 10 ms, from this process). Reports submit-to-agent dispatch latency, tasks
 * per second, the server's RSS idle, with the agents connected and at its peak, and the delivery
 * latency of stats snapshots to M observer sockets (which includes the event batch window).
 */
import { fork } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { flags, percentile, report, startServerProcess } from '../lib.js';

const here = dirname(fileURLToPath(import.meta.url));
const now = () => performance.timeOrigin + performance.now();

async function post(url: string, body: unknown): Promise<any> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const json = await res.json();
  if (!res.ok) throw new Error(`${url}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

export default async function ws(args: string[]): Promise<void> {
  const f = flags(args, { agents: 1000, rate: 2000, seconds: 10, observers: 50, credit: 4 });
  const server = await startServerProcess({ FLEETD_WS_MAX_CONNECTIONS: String(f.agents + f.observers + 100) });
  const work = mkdtempSync(join(tmpdir(), 'fleetd-bench-ws-'));
  try {
    const rssIdle = server.rssMb();
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
    const worker = fork(join(here, '../workers/ws-agents.ts'), [server.url, agentsFile, String(f.observers), String(f.credit)], {
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    const next = async (type: string) => {
      for (;;) {
        const [message] = (await once(worker, 'message')) as [{ type: string } & Record<string, any>];
        if (message.type === type) return message;
      }
    };
    const ready = await next('ready');
    const connectSeconds = (Date.now() - connectStarted) / 1000;
    const rssConnected = server.rssMb();
    process.stdout.write(`${ready.sockets} sockets open in ${connectSeconds.toFixed(1)} s; server RSS ${rssConnected} MB\n`);

    let rssPeak = rssConnected;
    const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, server.rssMb())), 250);
    worker.send({ type: 'measure' });
    const perBatch = Math.max(1, Math.round(f.rate / 100));
    const total = Math.round(f.rate * f.seconds);
    let submitted = 0;
    let errors = 0;
    const inFlight = new Set<Promise<void>>();
    const started = Date.now();
    while (submitted < total) {
      const due = Math.min(total, Math.floor(((Date.now() - started) / 1000) * f.rate) + perBatch);
      while (submitted < due && inFlight.size < 16) {
        const n = Math.min(perBatch, due - submitted);
        submitted += n;
        const tasks = Array.from({ length: n }, () => ({ type: 'bench', payload: { t: now() } }));
        const p = post(`${server.url}/v1/tasks/batch`, { tasks }).then(
          () => {},
          () => void errors++,
        );
        inFlight.add(p);
        void p.finally(() => inFlight.delete(p));
      }
      await new Promise((r) => setTimeout(r, 10));
    }
    await Promise.all(inFlight);
    const submitSeconds = (Date.now() - started) / 1000;
    let completed = 0;
    const drainDeadline = Date.now() + 60_000;
    while (completed < submitted - errors && Date.now() < drainDeadline) {
      worker.send({ type: 'completed' });
      completed = (await next('completed')).completed;
      if (completed < submitted - errors) await new Promise((r) => setTimeout(r, 100));
    }
    const elapsed = (Date.now() - started) / 1000;
    clearInterval(sampler);
    worker.send({ type: 'finish' });
    const results = await next('results');
    await once(worker, 'exit');

    const ms = (v: number) => Math.round(v * 100) / 100;
    report(
      'ws',
      [
        {
          agents: f.agents,
          'rate/s': f.rate,
          submitted,
          errors,
          completed: results.completed,
          'tasks/s': Math.round(results.completed / elapsed),
          'dispatch p50 ms': ms(percentile(results.dispatch, 50)),
          'dispatch p95 ms': ms(percentile(results.dispatch, 95)),
          'dispatch p99 ms': ms(percentile(results.dispatch, 99)),
          observers: f.observers,
          'observer p50 ms': ms(percentile(results.observed, 50)),
          'observer p99 ms': ms(percentile(results.observed, 99)),
          'rss idle MB': rssIdle,
          'rss connected MB': rssConnected,
          'rss peak MB': rssPeak,
        },
      ],
      { flags: f, connectSeconds, submitSeconds, stillOpen: results.open },
    );
  } finally {
    await server.stop();
    rmSync(work, { recursive: true, force: true });
  }
}
