/**
 * `npm run bench -- http [--seconds 8] [--connections 32] [--rounds 2]`
 *
 * What each HTTP-layer piece costs or saves, each against a baseline server in the same run:
 * 1. reads: GET /v1/tasks?limit=100 with the response cache vs with it turned off (P50/P99, req/s),
 *    plain and brotli-encoded (a cached body is compressed once; an uncached one on every request);
 * 2. compression: bytes of that list as identity, gzip and brotli;
 * 3. heartbeats: POST /v1/agents/:id/heartbeat across 1000 agents with rate limiting and metrics on
 *    vs both off. Goal: together they cost < 10 % of heartbeat throughput.
 * Configurations alternate over the rounds, and each figure is the median over rounds, to spread
 * the noise of a shared machine evenly.
 */
import { readFileSync } from 'node:fs';
import { get } from 'node:http';
import autocannon from 'autocannon';
import { authHeaders, flags, report, startServerProcess, type Row, type ServerProcess } from '../lib.js';

interface Measure {
  rps: number;
  p50: number;
  p99: number;
  non2xx: number;
  /** Server CPU time per request: far less sensitive than throughput to other work on the machine. */
  cpuUs: number;
}

/** User + system CPU time of a process in µs, from /proc (clock ticks of 10 ms). */
function cpuUsOf(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10_000;
}

async function load(
  server: ServerProcess,
  opts: { seconds: number; connections: number; method?: 'GET' | 'POST'; paths: string[]; headers?: Record<string, string> },
): Promise<Measure> {
  let next = 0;
  const cpuBefore = cpuUsOf(server.pid);
  const paths = opts.paths;
  const result = await autocannon({
    url: server.url,
    connections: opts.connections,
    duration: opts.seconds,
    requests: [
      {
        method: opts.method ?? 'GET',
        headers: { ...authHeaders, ...opts.headers },
        setupRequest: (req) => ({ ...req, path: paths[next++ % paths.length] }),
      },
    ],
  });
  const cpuUs = (cpuUsOf(server.pid) - cpuBefore) / Math.max(1, result.requests.total);
  return { rps: result.requests.average, p50: result.latency.p50, p99: result.latency.p99, non2xx: result.non2xx, cpuUs };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

function summarise(name: string, runs: Measure[]): Row {
  return {
    case: name,
    'req/s': Math.round(median(runs.map((r) => r.rps))),
    'p50 ms': median(runs.map((r) => r.p50)),
    'p99 ms': median(runs.map((r) => r.p99)),
    'server CPU µs/req': Math.round(median(runs.map((r) => r.cpuUs))),
    non2xx: runs.reduce((n, r) => n + r.non2xx, 0),
  };
}

/** Bytes of the body as sent (node:http does not decode it, unlike fetch). */
function wireBytes(url: string, encoding: string): Promise<number> {
  return new Promise((resolve, reject) => {
    get(url, { headers: { ...authHeaders, 'accept-encoding': encoding } }, (res) => {
      let n = 0;
      res.on('data', (chunk: Buffer) => (n += chunk.length));
      res.on('end', () => resolve(n));
    }).on('error', reject);
  });
}

async function seedTasks(url: string, n: number): Promise<void> {
  const tasks = Array.from({ length: n }, (_, i) => ({
    type: 'bench-read',
    payload: { prompt: `summarise document ${i} for the weekly report, keeping figures and names`, tags: ['report', 'weekly'], i },
  }));
  const res = await fetch(`${url}/v1/tasks/batch`, { method: 'POST', headers: { ...authHeaders, 'content-type': 'application/json' }, body: JSON.stringify({ tasks }) });
  if (res.status !== 201) throw new Error(`seeding failed: ${res.status}`);
}

async function registerAgents(url: string, n: number): Promise<string[]> {
  const agents = Array.from({ length: n }, (_, i) => ({ name: `bench-${i}`, capabilities: ['bench'] }));
  const res = await fetch(`${url}/v1/agents/batch`, { method: 'POST', headers: { ...authHeaders, 'content-type': 'application/json' }, body: JSON.stringify({ agents }) });
  if (res.status !== 201) throw new Error(`registering failed: ${res.status}`);
  const body = (await res.json()) as { items: { agent: { id: string } }[] };
  return body.items.map((r) => r.agent.id);
}

export default async function http(args: string[]): Promise<void> {
  const f = flags(args, { seconds: 8, connections: 32, rounds: 2 });
  const opts = { seconds: f.seconds, connections: f.connections };
  const rows: Row[] = [];
  const readPath = '/v1/tasks?type=bench-read&limit=100';

  // 1. Cached vs uncached reads. Rate limits off on both, so that only the cache differs.
  const readEnv = { FLEETD_RATE_LIMIT_READ: '0' };
  const cached = await startServerProcess(readEnv);
  const uncached = await startServerProcess({ ...readEnv, FLEETD_CACHE_MAX_ENTRIES: '0' });
  const compression: Row[] = [];
  try {
    await seedTasks(cached.url, 100);
    await seedTasks(uncached.url, 100);
    const runs: Record<string, Measure[]> = { cached: [], uncached: [], cachedBr: [], uncachedBr: [] };
    const br = { 'accept-encoding': 'br' };
    await load(uncached, { ...opts, seconds: 2, paths: [readPath] });
    await load(cached, { ...opts, seconds: 2, paths: [readPath] });
    for (let r = 0; r < f.rounds; r++) {
      runs.uncached.push(await load(uncached, { ...opts, paths: [readPath] }));
      runs.cached.push(await load(cached, { ...opts, paths: [readPath] }));
      runs.uncachedBr.push(await load(uncached, { ...opts, paths: [readPath], headers: br }));
      runs.cachedBr.push(await load(cached, { ...opts, paths: [readPath], headers: br }));
    }
    rows.push(summarise('GET /v1/tasks?limit=100, cache off', runs.uncached));
    rows.push(summarise('GET /v1/tasks?limit=100, cache on', runs.cached));
    rows.push(summarise('same, accept-encoding: br, cache off', runs.uncachedBr));
    rows.push(summarise('same, accept-encoding: br, cache on', runs.cachedBr));

    // 2. Compression: what the same list weighs on the wire.
    for (const encoding of ['identity', 'gzip', 'br']) compression.push({ encoding, bytes: await wireBytes(cached.url + readPath, encoding) });
  } finally {
    await cached.stop();
    await uncached.stop();
  }
  const identity = Number(compression[0].bytes);
  for (const c of compression) c.saved = `${Math.round((1 - Number(c.bytes) / identity) * 100)} %`;

  // 3. Heartbeats with rate limiting and metrics on vs off. The heartbeat budget is raised so that
  // the limiter counts every request without rejecting any: what is measured is its bookkeeping.
  const bare = await startServerProcess({
    FLEETD_METRICS: 'off',
    FLEETD_RATE_LIMIT_READ: '0',
    FLEETD_RATE_LIMIT_WRITE: '0',
    FLEETD_RATE_LIMIT_HEARTBEAT: '0',
    FLEETD_RATE_LIMIT_CLAIM: '0',
  });
  const full = await startServerProcess({ FLEETD_RATE_LIMIT_HEARTBEAT: '1000000' });
  let overhead = NaN;
  let cpuOverhead = NaN;
  try {
    const paths = async (url: string) => (await registerAgents(url, 1000)).map((id) => `/v1/agents/${id}/heartbeat`);
    const barePaths = await paths(bare.url);
    const fullPaths = await paths(full.url);
    const runs: Record<string, Measure[]> = { bare: [], full: [] };
    // A first, unrecorded round warms both up (JIT, heap growth).
    await load(bare, { ...opts, seconds: 2, method: 'POST', paths: barePaths });
    await load(full, { ...opts, seconds: 2, method: 'POST', paths: fullPaths });
    for (let r = 0; r < f.rounds; r++) {
      runs.bare.push(await load(bare, { ...opts, method: 'POST', paths: barePaths }));
      runs.full.push(await load(full, { ...opts, method: 'POST', paths: fullPaths }));
    }
    const bareRow = summarise('heartbeat, rate limits + metrics off', runs.bare);
    const fullRow = summarise('heartbeat, rate limits + metrics on', runs.full);
    overhead = Math.round((1 - Number(fullRow['req/s']) / Number(bareRow['req/s'])) * 1000) / 10;
    cpuOverhead = Math.round((Number(fullRow['server CPU µs/req']) / Number(bareRow['server CPU µs/req']) - 1) * 1000) / 10;
    rows.push(bareRow, fullRow);
  } finally {
    await bare.stop();
    await full.stop();
  }

  report('http', [...rows, ...compression.map((c) => ({ case: `list bytes, ${c.encoding}`, bytes: c.bytes, saved: c.saved }))], {
    heartbeatThroughputCostPercent: overhead,
    heartbeatCpuCostPercent: cpuOverhead,
    goal: 'rate limits + metrics cost < 10 % of heartbeat throughput',
    flags: f,
  });
  process.stdout.write(
    `\nrate limits + metrics on heartbeats: ${overhead} % of throughput, ${cpuOverhead} % more server CPU per request (goal < 10 %)\n`,
  );
}
