/**
 * `npm run bench -- store [--tasks 10000] [--agents 10] [--objects 0] [--rounds 3]`
 *
 * The store alone, without HTTP: CPU per task of submit (batches of 100), claim (each agent up to
 * 10, all at once) and complete (each task, all at once), on SQLite (a data dir of its own) and on
 * PostgreSQL (FLEETD_BENCH_DATABASE_URL, a schema of its own): this process's CPU and, on
 * PostgreSQL, its backends'. Claims pass core's plan as the service does, so the check that no
 * plan is needed is counted. What the triggers, indexes and statements of the hot path cost.
 *
 * With `--objects 1`, on SQLite only: what each index and trigger of the tasks table costs a task.
 * Each is dropped, alone, from a fresh store, and the store measured without it, alternating with
 * the store as it ships over `--rounds` rounds; the table gives the median CPU a task of each and
 * the difference. A negative saving means the hot path needs the object (a claim without its index
 * scans). Dropping a trigger that keeps a count can make claims wrong: the figure is its cost only.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { planClaim } from '../../src/core/rules/admission.js';
import type { Driver } from '../../src/store/driver.js';
import { openPostgres } from '../../src/store/postgres/driver.js';
import { openSqlite } from '../../src/store/sqlite/driver.js';
import type { TaskInsertParams } from '../../src/store/store.js';
import { cpuMsOf, flags, postgresBackendsOf, report, type Row } from '../lib.js';

const DATABASE_URL = process.env.FLEETD_BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

export default async function storeScenario(args: string[]): Promise<void> {
  const f = flags(args, { tasks: 10_000, agents: 10, objects: 0, rounds: 3 });
  if (f.objects) return objectCosts(f);
  const rows: Row[] = [];
  const dir = mkdtempSync(join(tmpdir(), 'fleetd-bench-store-'));
  try {
    rows.push(await measure('sqlite', openSqlite({ dataDir: dir }), f));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const pgDriver = openPostgres({ url: DATABASE_URL, schema: `fleetd_bench_store_${process.pid}`, poolSize: 8 });
  try {
    await pgDriver.migrate();
    rows.push(await measure('postgres', pgDriver, f));
  } finally {
    await pgDriver.database.dropSchema();
    await pgDriver.close();
  }
  report('store', rows, { flags: f });
}

/** One measure on a fresh SQLite store, with `drop` (an index or trigger) dropped first when given. */
async function sqliteMeasure(f: Record<string, number>, drop?: { type: string; name: string }): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'fleetd-bench-store-'));
  const driver = openSqlite({ dataDir: dir });
  try {
    if (drop) driver.database.db.exec(`DROP ${drop.type.toUpperCase()} ${drop.name}`);
    return (await measure('sqlite', driver, f))['cpu µs/task fleetd'] as number;
  } finally {
    await driver.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function objectCosts(f: Record<string, number>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'fleetd-bench-store-'));
  const probe = openSqlite({ dataDir: dir });
  const objects = probe.database.db
    .prepare("SELECT type, name, sql FROM sqlite_master WHERE tbl_name = 'tasks' AND type IN ('index', 'trigger') AND sql IS NOT NULL ORDER BY type, name")
    .all() as { type: string; name: string; sql: string }[];
  await probe.close();
  rmSync(dir, { recursive: true, force: true });
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const shipped: number[] = [];
  const without = new Map<string, number[]>(objects.map((o) => [o.name, []]));
  for (let round = 0; round < f.rounds; round++) {
    for (const object of objects) {
      shipped.push(await sqliteMeasure(f));
      // A statement that names an index (INDEXED BY) fails without it, and claims lease nothing
      // without a count they read: either way the object is part of the hot path.
      without.get(object.name)!.push(await sqliteMeasure(f, object).catch(() => Number.NaN));
      process.stdout.write(`round ${round + 1}: ${object.type} ${object.name}: ${shipped.at(-1)} µs as shipped, ${without.get(object.name)!.at(-1)} µs without\n`);
    }
  }
  const base = median(shipped);
  const rows: Row[] = [{ object: '(as shipped)', 'cpu µs/task': base, 'saved by dropping it': '' }];
  for (const o of objects) {
    const us = median(without.get(o.name)!);
    const named = Number.isNaN(us);
    rows.push({ object: `${o.type} ${o.name}`, 'cpu µs/task': named ? '' : us, 'saved by dropping it': named ? 'needed: claims fail without it' : base - us });
  }
  report('store-objects', rows, { flags: f });
}

async function measure(name: string, driver: Driver, f: Record<string, number>): Promise<Row> {
  const { store } = driver;
  const t0 = Date.now();
  const agents = Array.from({ length: f.agents }, (_, i) => `agent-${i}`);
  await store.agentCreateMany(agents.map((id) => ({ id, name: id, capabilities: ['t'], labels: {}, maxConcurrency: 10, namespace: 'default', tokenHash: `h-${id}`, now: t0 })));
  const task = (): TaskInsertParams => ({
    namespace: 'default',
    type: 't',
    payload: { i: 1 },
    priority: 0,
    requires: ['t'],
    idempotencyKey: null,
    maxAttempts: 3,
    leaseMs: 30_000,
    backoffMs: 100,
    runAt: t0,
    executionTimeoutMs: null,
    scheduleTimeoutMs: null,
    tags: [],
    metadata: {},
    expiresAt: null,
    status: 'queued',
    requestHash: null,
  });
  // Every pooled connection open, so that its backend is found.
  await Promise.all(Array.from({ length: 8 }, () => store.taskGet({ id: 1 })));
  const backends = name === 'postgres' ? await postgresBackendsOf(process.pid, DATABASE_URL) : [];
  const backendMs = () => backends.reduce((ms, pid) => ms + cpuMsOf(pid), 0);
  const cpu0 = process.cpuUsage();
  const b0 = backendMs();
  const started = Date.now();
  let done = 0;
  while (done < f.tasks) {
    await store.taskInsertMany({ tasks: Array.from({ length: 100 }, task), now: Date.now(), onRepeat: () => {} });
    const claims = await Promise.all(agents.map((agentId) => store.taskClaim({ agentId, max: 10, now: Date.now(), plan: planClaim })));
    await Promise.all(claims.flatMap((c, k) => c.tasks.map((t) => store.taskComplete({ id: t.id, agentId: agents[k], result: null, now: Date.now() }))));
    const claimed = claims.reduce((n, c) => n + c.tasks.length, 0);
    // Only a store missing what claims rely on (`--objects`) leases nothing with tasks queued.
    if (claimed === 0) throw new Error(`${name}: the claims leased nothing`);
    done += claimed;
  }
  const cpu = process.cpuUsage(cpu0);
  return {
    store: name,
    tasks: done,
    'tasks/s': Math.round((done * 1000) / (Date.now() - started)),
    'cpu µs/task fleetd': Math.round((cpu.user + cpu.system) / done),
    postgres: name === 'postgres' ? Math.round(((backendMs() - b0) * 1000) / done) : '',
  };
}
