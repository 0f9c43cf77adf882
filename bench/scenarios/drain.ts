/**
 * `npm run bench -- drain [--tasks 20000] [--concurrency 50] [--agents 50]` (BullMQ on FLEETD_BENCH_REDIS_URL,
 * default redis://127.0.0.1:6379)
 *
 * The hot path against a queue whose workers live in the queue's own process, in the same run:
 * N tasks are submitted in bulk, then drained by fleetd's SDK over WebSocket — one agent at
 * concurrency 50, then 50 agents at concurrency 1 — and by BullMQ on the local Redis with the same
 * shapes (one Worker at concurrency 50, 50 Workers at concurrency 1), each handler doing nothing.
 * A drain is timed from the moment the workers start to the moment the queue reports every task
 * completed (fleetd's counters, BullMQ's completed count), so a completion that is not yet
 * acknowledged does not count. Prints both and fleetd ÷ BullMQ for each shape.
 */
import { randomUUID } from 'node:crypto';
import { Queue, Worker } from 'bullmq';
import { FleetClient, type FleetAgent, type StatsJson } from '../../src/client/index.js';
import { BENCH_ADMIN_KEY, flags, report, startServerProcess, type Row } from '../lib.js';

type Shape = { name: string; workers: number; concurrency: number };

export default async function drain(args: string[]): Promise<void> {
  const f = flags(args, { tasks: 20_000, concurrency: 50, agents: 50 });
  const redisUrl = new URL(process.env.FLEETD_BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379');
  const shapes: Shape[] = [
    { name: `1 worker × ${f.concurrency}`, workers: 1, concurrency: f.concurrency },
    { name: `${f.agents} workers × 1`, workers: f.agents, concurrency: 1 },
  ];
  const rows: Row[] = [];
  for (const shape of shapes) {
    const fleet = await drainFleetd(f.tasks, shape);
    const bull = await drainBullmq(f.tasks, shape, redisUrl);
    rows.push({ shape: shape.name, queue: 'fleetd (SDK, WebSocket)', 'submit tasks/s': fleet.submitRate, 'drain tasks/s': fleet.drainRate });
    rows.push({ shape: shape.name, queue: 'BullMQ (in-process, Redis)', 'submit tasks/s': bull.submitRate, 'drain tasks/s': bull.drainRate });
    rows.push({ shape: shape.name, queue: 'fleetd ÷ BullMQ', 'submit tasks/s': ratio(fleet.submitRate, bull.submitRate), 'drain tasks/s': ratio(fleet.drainRate, bull.drainRate) });
  }
  report('drain', rows, { flags: f });
}

const ratio = (a: number, b: number) => Math.round((a / b) * 100) / 100;
const rate = (n: number, ms: number) => Math.round((n / ms) * 1000);

interface Drained {
  submitRate: number;
  drainRate: number;
}

async function drainFleetd(n: number, shape: Shape): Promise<Drained> {
  process.stdout.write(`\n— fleetd, ${shape.name}: ${n} tasks —\n`);
  // The drain is limited by the queue, not by the per-client rate limits a production default sets.
  const server = await startServerProcess({ FLEETD_RATE_LIMIT_WRITE: '0', FLEETD_RATE_LIMIT_READ: '0', FLEETD_RATE_LIMIT_CLAIM: '0', FLEETD_LOG_LEVEL: 'warn' });
  const client = new FleetClient({ url: server.url, apiKey: BENCH_ADMIN_KEY });
  const agents: FleetAgent[] = [];
  try {
    const type = `drain-${randomUUID().slice(0, 8)}`;
    const submitStart = performance.now();
    for (let i = 0; i < n; i += 1000) {
      await client.submitBatch(Array.from({ length: Math.min(1000, n - i) }, (_, j) => ({ type, payload: { i: i + j } })));
    }
    const submitMs = performance.now() - submitStart;

    const drainStart = performance.now();
    for (let a = 0; a < shape.workers; a++) {
      const agent = client.agent({ name: `drain-${a}`, capabilities: [type], concurrency: shape.concurrency, transport: 'ws' });
      agents.push(agent);
      void agent.work(() => ({ ok: true }));
    }
    await until(async () => completedOf(await client.stats(), type) >= n);
    const drainMs = performance.now() - drainStart;
    process.stdout.write(`submitted in ${Math.round(submitMs)} ms, drained in ${Math.round(drainMs)} ms\n`);
    return { submitRate: rate(n, submitMs), drainRate: rate(n, drainMs) };
  } finally {
    await Promise.all(agents.map((a) => a.stop()));
    await server.stop();
  }
}

/** Completed tasks of one type, from /v1/stats (kept by counters on every write, not a scan). */
function completedOf(stats: StatsJson, type: string): number {
  return stats.tasks.byType[type]?.completed ?? 0;
}

async function drainBullmq(n: number, shape: Shape, redisUrl: URL): Promise<Drained> {
  process.stdout.write(`\n— BullMQ, ${shape.name}: ${n} jobs —\n`);
  const connection = { host: redisUrl.hostname, port: Number(redisUrl.port || 6379), maxRetriesPerRequest: null };
  const name = `fleetd-bench-drain-${randomUUID().slice(0, 8)}`;
  const queue = new Queue(name, { connection });
  const workers: Worker[] = [];
  try {
    const submitStart = performance.now();
    for (let i = 0; i < n; i += 1000) {
      await queue.addBulk(Array.from({ length: Math.min(1000, n - i) }, (_, j) => ({ name: 'drain', data: { i: i + j } })));
    }
    const submitMs = performance.now() - submitStart;

    let completed = 0;
    let onAll!: () => void;
    const all = new Promise<void>((resolve) => (onAll = resolve));
    const drainStart = performance.now();
    for (let w = 0; w < shape.workers; w++) {
      const worker = new Worker(name, async () => ({ ok: true }), { connection, concurrency: shape.concurrency });
      worker.on('completed', () => {
        if (++completed === n) onAll();
      });
      workers.push(worker);
    }
    await all;
    // 'completed' fires after BullMQ has moved the job to its completed set: the same point as fleetd's counter.
    const drainMs = performance.now() - drainStart;
    process.stdout.write(`submitted in ${Math.round(submitMs)} ms, drained in ${Math.round(drainMs)} ms\n`);
    return { submitRate: rate(n, submitMs), drainRate: rate(n, drainMs) };
  } finally {
    await Promise.all(workers.map((w) => w.close()));
    await queue.obliterate({ force: true });
    await queue.close();
  }
}

async function until(check: () => Promise<boolean>, timeoutMs = 600_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await check())) {
    if (performance.now() > deadline) throw new Error('drain did not finish in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}
