/**
 * `npm run bench -- drain [--tasks 5000] [--concurrency 50] [--agents 50] [--heartbeat-agents 5000]
 * [--seconds 5] [--connections 100] [--postgres 0] [--payload-bytes 0]` (BullMQ on FLEETD_BENCH_REDIS_URL, default redis://127.0.0.1:6379)
 *
 * The hot path against a queue whose workers live in the queue's own process, in the same run:
 * N tasks are submitted in bulk, then drained by fleetd's SDK over WebSocket — one agent at
 * concurrency 50, then 50 agents at concurrency 1 — and by BullMQ on the local Redis with the same
 * shapes (one Worker at concurrency 50, 50 Workers at concurrency 1), each handler doing nothing;
 * then by 50 plain-HTTP agents whose one request a round completes their task and claims the next
 * (POST /v1/tasks/complete with claim), against BullMQ's 50 Workers of the same run.
 * A drain is timed from the moment the workers start to the moment the queue reports every task
 * completed (fleetd's counters, BullMQ's completed count), so a completion that is not yet
 * acknowledged does not count. fleetd's counters are read from /v1/stats every STATS_POLL_MS.
 * Prints both and fleetd ÷ BullMQ for each shape. Each task's payload (each job's data) is `{ i }`,
 * or with `--payload-bytes n` also a text of n bytes, as an agent's prompt would be: both queues
 * carry the same.
 *
 * Then heartbeats: `--heartbeat-agents` agents heartbeating over `--connections` connections for
 * `--seconds` (fleetd as it ships: rate limits on, each agent well inside its own), against a bare
 * Fastify route answering {} driven the same way, in the same run: both rates, P99s and the ratio.
 * More agents than asked when the bare route's rate would take them past half their heartbeat rate
 * limit: a heartbeat refused 429 is cheaper than one served, and would flatter the ratio.
 * The defaults are short; a quiet machine's figures want `--tasks 20000 --seconds 10`.
 *
 * With `--postgres 1` every fleetd server of the run keeps its data in PostgreSQL
 * (FLEETD_BENCH_DATABASE_URL, a fresh schema each, dropped at the end) instead of SQLite: one node's
 * drain on PostgreSQL, against the same BullMQ.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { Queue, Worker } from 'bullmq';
import { FleetClient, type FleetAgent } from '../../src/client/index.js';
import { BENCH_ADMIN_KEY, BENCH_DATABASE_URL, BENCH_REDIS_URL, dropSchemas, flags, postgresCpuFrom, report, startServerProcess, untilCompleted, type Row, type ServerProcess } from '../lib.js';
import { Client, hammer, startBareFastify } from '../load.js';
import { resolveConfig } from '../../src/config.js';

type Shape = { name: string; workers: number; concurrency: number };

export default async function drain(args: string[]): Promise<void> {
  const f = flags(args, { tasks: 5_000, concurrency: 50, agents: 50, 'heartbeat-agents': 5_000, seconds: 5, connections: 100, postgres: 0, 'payload-bytes': 0 });
  payloadText = 'an agent would read this prompt; '.repeat(Math.ceil(f['payload-bytes'] / 33)).slice(0, f['payload-bytes']);
  const schemas: string[] = [];
  try {
    await compare(f, fleetdStarter(f.postgres === 1, schemas));
  } finally {
    await dropSchemas(schemas);
  }
}

export type StartFleetd = (env?: Record<string, string>) => Promise<ServerProcess>;

/** The text every task's payload carries beside its number (`--payload-bytes`): none by default. */
let payloadText = '';
const payloadOf = (i: number): Record<string, unknown> => (payloadText === '' ? { i } : { i, prompt: payloadText });

/** How this run starts a fleetd server: on SQLite, or with `--postgres 1` on a fresh PostgreSQL schema (noted in `schemas`). */
function fleetdStarter(onPostgres: boolean, schemas: string[]): StartFleetd {
  if (!onPostgres) return (env = {}) => startServerProcess(env);
  return (env = {}) => {
    const schema = `fleetd_bench_drain_${randomBytes(4).toString('hex')}`;
    schemas.push(schema);
    return startServerProcess({ ...env, FLEETD_DATABASE_URL: BENCH_DATABASE_URL, FLEETD_DATABASE_SCHEMA: schema });
  };
}

async function compare(f: Record<string, number>, startFleetd: StartFleetd): Promise<void> {
  const redisUrl = new URL(BENCH_REDIS_URL);
  const shapes: Shape[] = [
    { name: `1 worker × ${f.concurrency}`, workers: 1, concurrency: f.concurrency },
    { name: `${f.agents} workers × 1`, workers: f.agents, concurrency: 1 },
  ];
  const rows: Row[] = [];
  let bullAgents: Drained | undefined;
  for (const shape of shapes) {
    const fleet = await drainFleetd(startFleetd, f.tasks, shape);
    const bull = await drainBullmq(f.tasks, shape, redisUrl);
    if (shape.workers === f.agents) bullAgents = bull;
    rows.push({ shape: shape.name, queue: 'fleetd (SDK, WebSocket)', 'submit tasks/s': fleet.submitRate, 'drain tasks/s': fleet.drainRate, 'server cpu µs/task': fleet.serverUs ?? '', ...databaseColumn(fleet) });
    rows.push({ shape: shape.name, queue: 'BullMQ (in-process, Redis)', 'submit tasks/s': bull.submitRate, 'drain tasks/s': bull.drainRate });
    rows.push({ shape: shape.name, queue: 'fleetd ÷ BullMQ', 'submit tasks/s': ratio(fleet.submitRate, bull.submitRate), 'drain tasks/s': ratio(fleet.drainRate, bull.drainRate) });
  }
  const plain = await drainPlainHttp(startFleetd, f.tasks, f.agents);
  const httpShape = `${f.agents} plain-HTTP agents × 1, batch endpoint`;
  rows.push({ shape: httpShape, queue: 'fleetd (complete + claim, one request a round)', 'submit tasks/s': plain.submitRate, 'drain tasks/s': plain.drainRate, 'server cpu µs/task': plain.serverUs ?? '', ...databaseColumn(plain) });
  rows.push({ shape: httpShape, queue: `fleetd ÷ BullMQ (${f.agents} workers × 1 above)`, 'drain tasks/s': ratio(plain.drainRate, bullAgents!.drainRate) });

  const beats = await heartbeats(startFleetd, f['heartbeat-agents'], f.connections, f.seconds);
  rows.push(...beats);
  report('drain', rows, { flags: f });
}

/**
 * Plain HTTP agents without the SDK, each at concurrency 1: a first claim, then one request a round
 * that completes the task in hand and claims the next (POST /v1/tasks/complete with claim).
 * `onDrain(server)` runs as the drain starts and its result is called as it ends, server still up.
 */
export async function drainPlainHttp(
  startFleetd: StartFleetd,
  n: number,
  agents: number,
  onDrain?: (server: ServerProcess) => Promise<() => Promise<void>>,
): Promise<Drained> {
  process.stdout.write(`\n— fleetd, ${agents} plain-HTTP agents × 1 on the batch endpoint: ${n} tasks —\n`);
  const server = await startFleetd({ FLEETD_RATE_LIMIT_WRITE: '0', FLEETD_RATE_LIMIT_READ: '0', FLEETD_RATE_LIMIT_CLAIM: '0' });
  const http = new Client(server.url, agents + 4);
  try {
    const type = `drain-http-${randomUUID().slice(0, 8)}`;
    const registered = await http.call('POST', '/v1/agents/batch', {
      agents: Array.from({ length: agents }, (_, a) => ({ name: `http-${a}`, capabilities: [type], maxConcurrency: 1 })),
    });
    const ids: string[] = registered.body.items.map((item: { agent: { id: string } }) => item.agent.id);
    const submitStart = performance.now();
    for (let i = 0; i < n; i += 1000) {
      const res = await http.call('POST', '/v1/tasks/batch?return=minimal', { tasks: Array.from({ length: Math.min(1000, n - i) }, (_, j) => ({ type, payload: payloadOf(i + j) })) });
      if (res.status !== 201) throw new Error(`submit answered ${res.status}`);
    }
    const submitMs = performance.now() - submitStart;

    let completed = 0;
    const drained = await onDrain?.(server);
    const cpu = await cpuFrom(server);
    const drainStart = performance.now();
    await Promise.all(
      ids.map(async (agentId) => {
        let tasks: { id: number }[] = (await http.call('POST', '/v1/tasks/claim', { agentId, max: 1, waitMs: 1_000 })).body.tasks;
        while (completed < n) {
          if (tasks.length === 0) {
            tasks = (await http.call('POST', '/v1/tasks/claim', { agentId, max: 1, waitMs: 200 })).body.tasks;
            continue;
          }
          const res = await http.call('POST', '/v1/tasks/complete', {
            agentId,
            items: tasks.map((t) => ({ op: 'complete', id: t.id, result: { ok: true } })),
            claim: { max: 1, waitMs: 200 },
          });
          if (res.status !== 200) throw new Error(`complete answered ${res.status}`);
          completed += res.body.items.filter((item: { status?: string }) => item.status === 'completed').length;
          tasks = res.body.tasks;
        }
      }),
    );
    const drainMs = performance.now() - drainStart;
    const used = await cpu(n);
    await drained?.();
    process.stdout.write(`submitted in ${Math.round(submitMs)} ms, drained in ${Math.round(drainMs)} ms\n`);
    return { submitRate: rate(n, submitMs), drainRate: rate(n, drainMs), ...used };
  } finally {
    await http.close();
    await server.stop();
  }
}

/** Heartbeats of many agents against a bare Fastify route, both over the same connections for the same time. */
async function heartbeats(startFleetd: StartFleetd, atLeast: number, connections: number, seconds: number): Promise<Row[]> {
  process.stdout.write(`\n— heartbeats: ${connections} connections, ${seconds} s, against a bare Fastify route —\n`);
  const bare = await startBareFastify();
  const bareCpu = bare.cpuMs();
  // CPU a request says more than the rate on a shared machine (the rate of either may be the load generator's).
  let bareCpuMs = 0;
  const baseline = await hammer(bare.url, { connections, seconds, pathFor: () => '/bare' }).finally(async () => {
    bareCpuMs = bare.cpuMs() - bareCpu;
    await bare.stop();
  });
  const bareUs = perRequestUs(bareCpuMs, baseline.rps * seconds);
  const agents = Math.max(atLeast, Math.ceil((baseline.rps * 2) / resolveConfig({}, {}).rateLimitHeartbeat));
  const server = await startFleetd();
  const http = new Client(server.url);
  try {
    const ids: string[] = [];
    for (let i = 0; i < agents; i += 1_000) {
      const batch = await http.call('POST', '/v1/agents/batch', {
        agents: Array.from({ length: Math.min(1_000, agents - i) }, (_, k) => ({ name: `hb-${i + k}`, capabilities: ['hb'] })),
      });
      ids.push(...batch.body.items.map((r: { agent: { id: string } }) => r.agent.id));
    }
    process.stdout.write(`${agents} agents (each at most half its rate limit at the bare route's ${baseline.rps} req/s)\n`);
    const serverCpu = server.cpuMs();
    const hb = await hammer(server.url, { connections, seconds, pathFor: (i) => `/v1/agents/${ids[i % ids.length]}/heartbeat` });
    const hbUs = perRequestUs(server.cpuMs() - serverCpu, hb.rps * seconds);
    return [
      { shape: `${connections} connections`, queue: 'bare Fastify POST {}', 'req/s': baseline.rps, p99_ms: baseline.p99, 'server cpu µs/req': bareUs, errors: baseline.errors + baseline.non2xx },
      { shape: `${connections} connections`, queue: `fleetd heartbeat (${agents} agents)`, 'req/s': hb.rps, p99_ms: hb.p99, 'server cpu µs/req': hbUs, errors: hb.errors + hb.non2xx },
      { shape: `${connections} connections`, queue: 'fleetd ÷ bare Fastify', 'req/s': ratio(hb.rps, baseline.rps), 'server cpu µs/req': ratio(hbUs, bareUs) },
    ];
  } finally {
    await http.close();
    await server.stop();
  }
}

/** Starts counting the CPU of a fleetd server and of the PostgreSQL backends serving it (none on SQLite); the returned function gives each's µs a task over `n` tasks. */
async function cpuFrom(server: ServerProcess): Promise<(n: number) => Promise<{ serverUs: number; databaseUs: number }>> {
  const database = await postgresCpuFrom(server.pid, BENCH_DATABASE_URL);
  const start = server.cpuMs();
  return async (n) => ({ serverUs: Math.round(((server.cpuMs() - start) * 1000) / n), databaseUs: Math.round(((await database()) * 1000) / n) });
}

const databaseColumn = (d: Drained): Row => (d.databaseUs ? { 'postgres cpu µs/task': d.databaseUs } : {});
const ratio = (a: number, b: number) => Math.round((a / b) * 100) / 100;
const perRequestUs = (cpuMs: number, requests: number) => Math.round((cpuMs * 1000) / requests);
const rate = (n: number, ms: number) => Math.round((n / ms) * 1000);

export interface Drained {
  submitRate: number;
  drainRate: number;
  /** fleetd's CPU a task over the drain (its stats polls included); BullMQ's workers share the bench's process. */
  serverUs?: number;
  /** With `--postgres 1`, the CPU a task of the PostgreSQL backends serving fleetd. */
  databaseUs?: number;
}

async function drainFleetd(startFleetd: StartFleetd, n: number, shape: Shape): Promise<Drained> {
  process.stdout.write(`\n— fleetd, ${shape.name}: ${n} tasks —\n`);
  // The drain is limited by the queue, not by the per-client rate limits a production default sets.
  const server = await startFleetd({ FLEETD_RATE_LIMIT_WRITE: '0', FLEETD_RATE_LIMIT_READ: '0', FLEETD_RATE_LIMIT_CLAIM: '0' });
  const client = new FleetClient({ url: server.url, apiKey: BENCH_ADMIN_KEY });
  const agents: FleetAgent[] = [];
  try {
    const type = `drain-${randomUUID().slice(0, 8)}`;
    const submitStart = performance.now();
    for (let i = 0; i < n; i += 1000) {
      await client.submitBatch(Array.from({ length: Math.min(1000, n - i) }, (_, j) => ({ type, payload: payloadOf(i + j) })));
    }
    const submitMs = performance.now() - submitStart;

    const cpu = await cpuFrom(server);
    const drainStart = performance.now();
    for (let a = 0; a < shape.workers; a++) {
      const agent = client.agent({ name: `drain-${a}`, capabilities: [type], concurrency: shape.concurrency, transport: 'ws' });
      agents.push(agent);
      void agent.work(() => ({ ok: true }));
    }
    await untilCompleted(client, type, n, { everyMs: STATS_POLL_MS, timeoutMs: 600_000 });
    const drainMs = performance.now() - drainStart;
    const used = await cpu(n);
    process.stdout.write(`submitted in ${Math.round(submitMs)} ms, drained in ${Math.round(drainMs)} ms\n`);
    return { submitRate: rate(n, submitMs), drainRate: rate(n, drainMs), ...used };
  } finally {
    await Promise.all(agents.map((a) => a.stop()));
    await server.stop();
  }
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
      await queue.addBulk(Array.from({ length: Math.min(1000, n - i) }, (_, j) => ({ name: 'drain', data: payloadOf(i + j) })));
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

/**
 * How often the SDK drains read /v1/stats to see whether they are done. Each read costs the server
 * about 0.8 ms of CPU: read every 10 ms, they took about 8 % of the CPU of the drain they measured (the
 * server's loop is what limits it). Every 50 ms, the end is known to 50 ms: under 1 % of a drain of
 * 20,000 tasks.
 */
const STATS_POLL_MS = 50;
