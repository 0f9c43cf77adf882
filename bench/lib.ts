import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import type { FleetClient } from '../src/client/index.js';
import { LOOP_RESOLUTION_MS } from '../src/core/stats.js';
import { listeningUrl } from '../test/helpers.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

/** The admin key of every server a bench run starts: benches measure fleetd as it ships, with auth on. */
export const BENCH_ADMIN_KEY = `fk_${randomBytes(32).toString('base64url')}`;
/** The PostgreSQL and Redis the benchmarks use (each run in a schema or key prefix of its own). */
export const BENCH_DATABASE_URL = process.env.FLEETD_BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
export const BENCH_REDIS_URL = process.env.FLEETD_BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';

/** Drops the PostgreSQL schemas a run made, with everything in them. */
export async function dropSchemas(schemas: readonly string[]): Promise<void> {
  if (schemas.length === 0) return;
  const client = new pg.Client({ connectionString: BENCH_DATABASE_URL });
  await client.connect();
  try {
    for (const schema of schemas) await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  } finally {
    await client.end();
  }
}
export const authHeaders = { authorization: `Bearer ${BENCH_ADMIN_KEY}` } as const;

/** A server's metrics as scraped now: one series' value by name (SQLite's, for a driver-labelled one). A scrape also starts prom-client's event-loop delay afresh. */
export async function metricsOf(server: { url: string }): Promise<(name: string) => number> {
  const text = await (await fetch(`${server.url}/metrics`, { headers: authHeaders })).text();
  return (name) => Number(new RegExp(`^${name}(?:\\{driver="sqlite"\\})? ([0-9.e+-]+)$`, 'm').exec(text)?.[1] ?? Number.NaN);
}

/** The event-loop delay in those metrics since the scrape before: its P99 and longest stall, in ms beyond the monitor's own sampling interval (LOOP_RESOLUTION_MS: an idle loop reads that much). */
export function loopDelayOf(metric: (name: string) => number): { p99: number; max: number } {
  const lagMs = (name: string) => Math.max(0, metric(name) * 1000 - LOOP_RESOLUTION_MS);
  return { p99: lagMs('nodejs_eventloop_lag_p99_seconds'), max: lagMs('nodejs_eventloop_lag_max_seconds') };
}

export interface ServerProcess {
  url: string;
  pid: number;
  child: ChildProcess;
  dataDir: string;
  /** Resident set size of the server process in MB, read from /proc. */
  rssMb(): number;
  /** CPU time (user + system) the server process has used, in ms, read from /proc. */
  cpuMs(): number;
  stop(): Promise<void>;
}

/** The flags `npm start` gives node (package.json's start script): a bench measures the server as it runs. */
const START_FLAGS = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).scripts.start as string).split(' ').filter((word) => word.startsWith('--'));

/**
 * Starts `fleetd start` in its own process, as `npm start` runs it (compiled, from dist/; bench/run.ts
 * builds first), and waits until it is ready.
 */
export async function startServerProcess(env: Record<string, string> = {}): Promise<ServerProcess> {
  const dataDir = mkdtempSync(join(tmpdir(), 'fleetd-bench-'));
  // FLEETD_BENCH_CPU_PROF=dir: the server writes a V8 CPU profile there when it stops (bench/profile.ts sums it by function).
  const profDir = process.env.FLEETD_BENCH_CPU_PROF;
  const profArgs = profDir ? ['--cpu-prof', `--cpu-prof-dir=${profDir}`] : [];
  // FLEETD_BENCH_NODE_FLAGS: node flags besides npm start's, to measure one (a V8 heap setting, say) against the flags as they ship.
  const extraFlags = process.env.FLEETD_BENCH_NODE_FLAGS?.split(' ').filter(Boolean) ?? [];
  const child = spawn(process.execPath, [...START_FLAGS, ...extraFlags, ...profArgs, join(root, 'dist/cli/main.js'), 'start'], {
    cwd: root,
    env: { ...process.env, FLEETD_PORT: '0', FLEETD_HOST: '127.0.0.1', FLEETD_DATA_DIR: dataDir, FLEETD_LOG_LEVEL: 'info', FLEETD_ADMIN_KEY: BENCH_ADMIN_KEY, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const url = await listeningUrl(child);
  return {
    url,
    pid: child.pid!,
    child,
    dataDir,
    rssMb: () => rssMbOf(child.pid!),
    cpuMs: () => cpuMsOf(child.pid!),
    async stop() {
      // A process killed by a signal has no exit code, only a signal code: it needs no second signal.
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export function rssMbOf(pid: number): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
    return Math.round(kb / 1024);
  } catch {
    return 0;
  }
}

/** CPU time (user + system) a process has used, in ms; 0 once it is gone. */
export function cpuMsOf(pid: number): number {
  try {
    // Fields after the command name, which may hold spaces: utime and stime are the 12th and 13th.
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS_PER_SECOND;
  } catch {
    return 0;
  }
}

// USER_HZ: 100 on every Linux architecture fleetd benches run on.
const CLOCK_TICKS_PER_SECOND = 100;

/**
 * The PostgreSQL backend processes serving process `pid` (a fleetd node): its TCP connections to
 * the database's port, matched to pg_stat_activity's client ports. With PostgreSQL on the same
 * machine, their CPU time is the database's work for that node, apart from everyone else's.
 */
export async function postgresBackendsOf(pid: number, databaseUrl: string): Promise<number[]> {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const socket = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (socket) inodes.add(socket[1]);
    } catch {
      // closed meanwhile
    }
  }
  const dbPort = Number(new URL(databaseUrl).port || 5432).toString(16).toUpperCase().padStart(4, '0');
  const ports: number[] = [];
  for (const table of ['tcp', 'tcp6']) {
    for (const line of readFileSync(`/proc/${pid}/net/${table}`, 'utf8').split('\n').slice(1)) {
      const [, local, remote, , , , , , , inode] = line.trim().split(/\s+/);
      if (inode && inodes.has(inode) && remote.endsWith(`:${dbPort}`)) ports.push(parseInt(local.split(':')[1], 16));
    }
  }
  if (ports.length === 0) return [];
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    return (await client.query<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE client_port = ANY($1::int[])', [ports])).rows.map((r) => r.pid);
  } finally {
    await client.end();
  }
}

/**
 * Starts counting the CPU time of the PostgreSQL backends serving process `pid` (0 for a node on
 * SQLite, which has none); the returned function gives the ms they used since, counting backends
 * the node's pool opened meanwhile from zero.
 */
export async function postgresCpuFrom(pid: number, databaseUrl: string): Promise<() => Promise<number>> {
  const start = new Map((await postgresBackendsOf(pid, databaseUrl)).map((backend) => [backend, cpuMsOf(backend)]));
  return async () => (await postgresBackendsOf(pid, databaseUrl)).reduce((ms, backend) => ms + cpuMsOf(backend) - (start.get(backend) ?? 0), 0);
}

/** Binds every thread of a process to these CPU cores (util-linux's taskset; Linux only). */
export function pinToCores(pid: number, cores: readonly number[]): void {
  execFileSync('taskset', ['--all-tasks', '--cpu-list', '--pid', cores.join(','), String(pid)], { stdio: 'ignore' });
}

/** Percentile of an unsorted sample, nearest-rank. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = Float64Array.from(values).sort();
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

export type Row = Record<string, string | number>;

/** Prints rows as an aligned table and writes { scenario, at, rows, ...extra } to bench/results/<scenario>.json. */
export function report(scenario: string, rows: Row[], extra: Record<string, unknown> = {}): void {
  const columns = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  const cell = (v: unknown) => (typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toFixed(2)) : String(v ?? ''));
  const widths = columns.map((c) => Math.max(c.length, ...rows.map((r) => cell(r[c]).length)));
  const line = (vals: string[]) => vals.map((v, i) => v.padEnd(widths[i])).join('  ');
  process.stdout.write(`\n${line(columns)}\n${line(widths.map((w) => '-'.repeat(w)))}\n`);
  for (const r of rows) process.stdout.write(`${line(columns.map((c) => cell(r[c])))}\n`);
  const dir = join(root, 'bench/results');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, `${scenario}.json`), JSON.stringify({ scenario, at: new Date().toISOString(), rows, ...extra }, null, 2));
  process.stdout.write(`\nwritten to bench/results/${scenario}.json\n`);
}

/** Simple `--name value` flag parsing for scenarios. */
export function flags(args: string[], defaults: Record<string, number>): Record<string, number> {
  const out = { ...defaults };
  for (let i = 0; i < args.length; i++) {
    const m = /^--([\w-]+)$/.exec(args[i]);
    if (m && m[1] in out) out[m[1]] = Number(args[++i]);
  }
  return out;
}

/**
 * Waits until /v1/stats counts `n` tasks of `type` completed (counters kept on every write, not a
 * scan), reading it every `everyMs`: each read costs the server CPU the drain it waits on needs.
 */
export async function untilCompleted(client: FleetClient, type: string, n: number, { everyMs, timeoutMs }: { everyMs: number; timeoutMs: number }): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (((await client.stats()).tasks.byType[type]?.completed ?? 0) < n) {
    if (performance.now() > deadline) throw new Error('the drain did not finish in time');
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
