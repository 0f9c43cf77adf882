/**
 * The soak: a fleet of agents (half on WebSocket push, half on HTTP long-poll, all through the SDK)
 * in several processes, steady submits, and every few seconds one agent process killed with SIGKILL
 * (its sockets and long-polls drop without a goodbye) and started again a moment later with the
 * same agents. It counts what a user would: errors, tasks acknowledged but never completed (lost),
 * tasks completed twice or submitted twice (duplicates), and follows the server's RSS and the
 * latencies minute by minute. `npm run bench -- soak` runs it for 10 minutes; test/soak.test.ts
 * runs a short one.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { authHeaders, percentile, startServerProcess } from './lib.js';
import { Client } from './load.js';
import type { SoakAgent } from './workers/soak-agents.js';

const here = dirname(fileURLToPath(import.meta.url));

export interface SoakOptions {
  /** How long tasks are submitted, in seconds. */
  seconds: number;
  agents: number;
  /** Tasks submitted per second. */
  rate: number;
  /** Seconds between two kills of an agent process; 0 kills none. */
  killEverySeconds: number;
  agentsPerProcess: number;
  /** After the submits stop, the longest wait for every acknowledged task to complete, in seconds. */
  drainSeconds: number;
  /** More settings for the server (FLEETD_* variables), over the soak's own. */
  serverEnv?: Record<string, string>;
  log?: (line: string) => void;
}

export type SoakMinute = {
  minute: number;
  submitted: number;
  completed: number;
  errors: number;
  'submit p50 ms': number;
  'submit p99 ms': number;
  'complete p99 ms': number;
  'rss MB': number;
  /** The V8 heap in use, and memory outside it (Buffers, zlib, SQLite's and ws's native memory): which of the two moves with the RSS. */
  'heap used MB': number;
  'external MB': number;
  /** The worst event-loop lag the server reported in the minute: a server that stalls, or a CPU it cannot get. */
  'loop lag max ms': number;
};

export interface SoakResult {
  /** Submits acknowledged by the server. */
  acknowledged: number;
  completed: number;
  /** Acknowledged tasks that did not end completed. */
  lost: number;
  /** Completions announced beyond one per completed task, plus submits that made a second task. */
  duplicates: number;
  /** Failed submits (each retried with its idempotency key) plus errors the agents met. */
  errors: number;
  errorRate: number;
  errorSamples: string[];
  /** Errors by kind (the message less the agent's id), with the phase they happened in. */
  errorKinds: Record<string, number>;
  /** Tasks handed out more than once (attempts > 1): at-least-once delivery after a kill. */
  redelivered: number;
  kills: number;
  minutes: SoakMinute[];
  /** The server's RSS every 5 s, with its V8 heap in use and its external memory (from /metrics). */
  rss: { atSeconds: number; mb: number; heapUsedMb?: number; externalMb?: number }[];
  /** Least-squares slope of the server's RSS after the first fifth of the run, in MB per minute. */
  rssSlopeMbPerMinute: number;
  /** The same over the second half: SQLite's page cache (64 MiB) fills as the database grows, early on. */
  rssSlopeSecondHalfMbPerMinute: number;
  /** The RSS over the second half: its 5th percentile, median and 95th percentile in MB, and how far those stray from the median. */
  rssSecondHalf: { p5: number; median: number; p95: number; belowPercent: number; abovePercent: number };
  /** The server's CPU (user + system) while submits ran, per task submitted. */
  serverCpuUsPerTask: number;
}

interface Worker {
  file: string;
  child?: ChildProcess;
  ready: boolean;
  /** A start pending after a kill. */
  restart?: NodeJS.Timeout;
}

interface Bucket {
  submitted: number;
  completed: number;
  errors: number;
  submitMs: number[];
  completeMs: number[];
  rss: number;
  heapUsedMb: number;
  externalMb: number;
  lagMaxMs: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Least-squares slope of y over x. */
function slope(points: { x: number; y: number }[]): number {
  const n = points.length;
  if (n < 2) return 0;
  const mx = points.reduce((s, p) => s + p.x, 0) / n;
  const my = points.reduce((s, p) => s + p.y, 0) / n;
  const sxx = points.reduce((s, p) => s + (p.x - mx) ** 2, 0);
  return sxx === 0 ? 0 : points.reduce((s, p) => s + (p.x - mx) * (p.y - my), 0) / sxx;
}

export async function runSoak(o: SoakOptions): Promise<SoakResult> {
  const log = o.log ?? (() => {});
  const server = await startServerProcess({
    FLEETD_WS_MAX_CONNECTIONS: String(o.agents + 100),
    // A killed WebSocket agent that is not back within 3 s goes offline and its tasks are re-queued.
    FLEETD_AGENT_DISCONNECT_GRACE_MS: '3000',
    ...o.serverEnv,
  });
  const work = mkdtempSync(join(tmpdir(), 'fleetd-soak-'));
  const http = new Client(server.url, 64);
  const workers: Worker[] = [];
  try {
    // The fleet: registered once; a restarted process brings back the same agents.
    const agents: SoakAgent[] = [];
    for (let i = 0; i < o.agents; i += 1_000) {
      const batch = Array.from({ length: Math.min(1_000, o.agents - i) }, (_, j) => ({ name: `soak-${i + j}`, capabilities: ['soak'], maxConcurrency: 2 }));
      const res = await http.call('POST', '/v1/agents/batch', { agents: batch });
      if (res.status !== 201) throw new Error(`registering agents: ${res.status} ${JSON.stringify(res.body)}`);
      for (const { agent, token } of res.body.items) agents.push({ id: agent.id, token, transport: agents.length % 2 === 0 ? 'ws' : 'poll' });
    }

    const started = Date.now();
    const buckets: Bucket[] = [];
    const bucket = (at: number): Bucket =>
      (buckets[Math.floor((at - started) / 60_000)] ??= { submitted: 0, completed: 0, errors: 0, submitMs: [], completeMs: [], rss: 0, heapUsedMb: 0, externalMb: 0, lagMaxMs: 0 });
    let agentErrors = 0;
    let submitErrors = 0;
    let kills = 0;
    const errorSamples: string[] = [];
    const errorKinds: Record<string, number> = {};
    let phase = 'connect';
    const countError = (text: string) => {
      if (errorSamples.length < 20) errorSamples.push(text);
      const kind = `${phase}: ${text.replace(/[0-9a-f]{8}-[0-9a-f-]{27}/g, '<agent>').replace(/task \d+/g, 'task <id>')}`;
      errorKinds[kind] = (errorKinds[kind] ?? 0) + 1;
    };

    const spawnWorker = (w: Worker) => {
      clearTimeout(w.restart);
      w.restart = undefined;
      w.ready = false;
      const child = fork(join(here, 'workers/soak-agents.ts'), [server.url, w.file], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
      w.child = child;
      child.on('message', (m: { type: string; errors?: string[] }) => {
        if (m.type === 'ready') w.ready = true;
        if (m.type !== 'progress') return;
        agentErrors += m.errors!.length;
        bucket(Date.now()).errors += m.errors!.length;
        for (const e of m.errors!) countError(e);
      });
    };
    for (let i = 0; i < agents.length; i += o.agentsPerProcess) {
      const file = join(work, `agents-${i}.json`);
      writeFileSync(file, JSON.stringify(agents.slice(i, i + o.agentsPerProcess)));
      const w = { file, ready: false };
      workers.push(w);
      spawnWorker(w);
    }
    const readyBy = Date.now() + 120_000;
    while (!workers.every((w) => w.ready)) {
      if (Date.now() > readyBy) throw new Error('the agent processes did not connect within 2 minutes');
      await sleep(100);
    }
    log(`${agents.length} agents connected in ${workers.length} processes in ${((Date.now() - started) / 1000).toFixed(1)} s; server RSS ${server.rssMb()} MB`);

    const acknowledged = new Set<number>();

    phase = 'soak';
    const soakStart = Date.now();
    const cpuAtStart = server.cpuMs();
    const rss: SoakResult['rss'] = [];
    const sampler = setInterval(async () => {
      const mb = server.rssMb();
      const sample: SoakResult['rss'][number] = { atSeconds: Math.round((Date.now() - soakStart) / 1000), mb };
      rss.push(sample);
      const b = bucket(Date.now());
      b.rss = mb;
      const metrics = await fetch(`${server.url}/metrics`, { headers: authHeaders }).then((r) => r.text()).catch(() => '');
      const megabytes = (name: string) => {
        const bytes = Number(new RegExp(`^${name} (\\d+)`, 'm').exec(metrics)?.[1]);
        return Number.isFinite(bytes) ? Math.round(bytes / 2 ** 20) : undefined;
      };
      sample.heapUsedMb = megabytes('nodejs_heap_size_used_bytes');
      sample.externalMb = megabytes('nodejs_external_memory_bytes');
      b.heapUsedMb = sample.heapUsedMb ?? 0;
      b.externalMb = sample.externalMb ?? 0;
      const stats = (await http.call('GET', '/v1/stats').catch(() => undefined))?.body;
      const soak = stats?.tasks?.byType?.soak ?? {};
      b.lagMaxMs = Math.max(b.lagMaxMs, stats?.eventLoop?.lagMaxMs ?? 0);
      log(`${Math.round((Date.now() - soakStart) / 1000)} s: ${acknowledged.size} acknowledged, ${soak.completed ?? 0} completed, ${kills} kills, ${agentErrors + submitErrors} errors, RSS ${mb} MB (heap ${sample.heapUsedMb ?? '?'}, external ${sample.externalMb ?? '?'})`);
    }, 5_000);

    // Kills: one agent process at a time, started again 0.5–5 s later (sometimes inside the
    // disconnect grace, so that WebSocket agents resume their leases, sometimes after it).
    const killer = o.killEverySeconds > 0
      ? setInterval(() => {
          const w = workers[Math.floor(Math.random() * workers.length)];
          if (w.restart) return;
          w.child!.kill('SIGKILL');
          kills++;
          w.restart = setTimeout(() => spawnWorker(w), 500 + Math.random() * 4_500);
        }, o.killEverySeconds * 1_000)
      : undefined;

    // Steady submits, each with an idempotency key: a submit that fails is sent again with the
    // same key, so that it is neither lost nor doubled.
    let seq = 0;
    const inFlight = new Set<Promise<void>>();
    const submit = async (n: number) => {
      for (let attempt = 1; ; attempt++) {
        const t0 = Date.now();
        try {
          const res = await http.call('POST', '/v1/tasks', { type: 'soak', payload: { seq: n }, idempotencyKey: `soak-${n}`, maxAttempts: 20 });
          if (res.status === 201 || res.status === 200) {
            acknowledged.add(res.body.task.id);
            const b = bucket(t0);
            b.submitted++;
            b.submitMs.push(Date.now() - t0);
            return;
          }
          countError(`submit: ${res.status} ${JSON.stringify(res.body).slice(0, 200)}`);
        } catch (err) {
          countError(`submit: ${(err as Error).message}`);
        }
        submitErrors++;
        bucket(t0).errors++;
        if (attempt >= 10) return;
        await sleep(100 * attempt);
      }
    };
    const submitUntil = soakStart + o.seconds * 1_000;
    while (Date.now() < submitUntil) {
      const due = Math.floor(((Date.now() - soakStart) / 1000) * o.rate);
      while (seq < due && inFlight.size < 256) {
        const p = submit(seq++);
        inFlight.add(p);
        void p.finally(() => inFlight.delete(p));
      }
      await sleep(20);
    }
    await Promise.all(inFlight);
    const serverCpuMs = server.cpuMs() - cpuAtStart;
    clearInterval(killer);
    phase = 'drain';
    for (const w of workers) if (w.restart) spawnWorker(w);

    // Drain: every acknowledged task is to complete, killed agents' tasks once their lease ends or
    // their agent's disconnect grace runs out.
    const drainBy = Date.now() + o.drainSeconds * 1_000;
    for (;;) {
      const stats = await http.call('GET', '/v1/stats');
      if ((stats.body?.tasks?.byType?.soak?.completed ?? 0) >= acknowledged.size || Date.now() > drainBy) break;
      await sleep(500);
    }
    clearInterval(sampler);

    // The store's word on every task: its status, and when it was created and completed.
    const exported = await fetch(`${server.url}/v1/tasks/export?type=soak`, { headers: authHeaders }).then((r) => r.text());
    const tasks = exported.split('\n').filter(Boolean).map((line) => JSON.parse(line) as { id: number; status: string; attempts: number; payload: { seq: number }; createdAt: string; completedAt: string | null });
    for (const t of tasks) {
      if (t.completedAt === null) continue;
      const b = bucket(Date.parse(t.completedAt));
      b.completed++;
      b.completeMs.push(Date.parse(t.completedAt) - Date.parse(t.createdAt));
    }
    const byId = new Map(tasks.map((t) => [t.id, t]));
    const lost = [...acknowledged].filter((id) => byId.get(id)?.status !== 'completed').length;
    const seqs = new Set(tasks.map((t) => t.payload.seq));
    // Each task.completed event the server published is counted in this histogram: more events than
    // completed tasks would be a task completed twice.
    const metrics = await fetch(`${server.url}/metrics`, { headers: authHeaders }).then((r) => r.text());
    const announced = Number(/^fleetd_task_run_seconds_count\{type="soak"\} (\d+)$/m.exec(metrics)?.[1] ?? NaN);
    const completed = tasks.filter((t) => t.status === 'completed').length;
    if (!Number.isFinite(announced)) throw new Error('/metrics has no fleetd_task_run_seconds_count for type soak');
    const duplicates = announced - completed + (tasks.length - seqs.size);

    phase = 'stop';
    await Promise.all(
      workers.map(async (w) => {
        const child = w.child!;
        if (child.exitCode !== null || child.signalCode !== null) return;
        const exited = new Promise((r) => child.once('exit', r));
        child.send({ type: 'stop' });
        const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
        await exited;
        clearTimeout(timer);
      }),
    );

    const errors = submitErrors + agentErrors;
    const operations = acknowledged.size + completed;
    const rssAfter = (fraction: number) => rss.filter((s) => s.atSeconds >= o.seconds * fraction);
    const rssSlopeAfter = (fraction: number) => Math.round(slope(rssAfter(fraction).map((s) => ({ x: s.atSeconds / 60, y: s.mb }))) * 100) / 100;
    const ms = (v: number) => (Number.isNaN(v) ? 0 : Math.round(v));
    const secondHalf = rssAfter(1 / 2).map((s) => s.mb);
    const [p5, median, p95] = [5, 50, 95].map((p) => percentile(secondHalf, p));
    const off = (v: number) => Math.round(((v - median) / median) * 1000) / 10;
    return {
      acknowledged: acknowledged.size,
      completed,
      lost,
      duplicates,
      errors,
      errorRate: operations === 0 ? 0 : errors / operations,
      errorSamples,
      errorKinds,
      redelivered: tasks.filter((t) => t.attempts > 1).length,
      kills,
      minutes: buckets.map((b, minute) => ({
        minute: minute + 1,
        submitted: b?.submitted ?? 0,
        completed: b?.completed ?? 0,
        errors: b?.errors ?? 0,
        'submit p50 ms': ms(percentile(b?.submitMs ?? [], 50)),
        'submit p99 ms': ms(percentile(b?.submitMs ?? [], 99)),
        'complete p99 ms': ms(percentile(b?.completeMs ?? [], 99)),
        'rss MB': b?.rss ?? 0,
        'heap used MB': b?.heapUsedMb ?? 0,
        'external MB': b?.externalMb ?? 0,
        'loop lag max ms': Math.round(b?.lagMaxMs ?? 0),
      })),
      rss,
      rssSlopeMbPerMinute: rssSlopeAfter(1 / 5),
      rssSlopeSecondHalfMbPerMinute: rssSlopeAfter(1 / 2),
      rssSecondHalf: { p5, median, p95, belowPercent: off(p5), abovePercent: off(p95) },
      serverCpuUsPerTask: Math.round((serverCpuMs * 1000) / Math.max(1, acknowledged.size)),
    };
  } finally {
    for (const w of workers) if (w.child && w.child.exitCode === null && w.child.signalCode === null) w.child.kill('SIGKILL');
    await http.close();
    await server.stop();
    rmSync(work, { recursive: true, force: true });
  }
}
