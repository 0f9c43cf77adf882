/**
 * `npm run bench -- store [--tasks 10000] [--agents 10]`
 *
 * The store alone, without HTTP: CPU per task of submit (batches of 100), claim (each agent up to
 * 10, all at once) and complete (each task, all at once), on SQLite (a data dir of its own) and on
 * PostgreSQL (FLEETD_BENCH_DATABASE_URL, a schema of its own): this process's CPU and, on
 * PostgreSQL, its backends'. Claims pass core's plan as the service does, so the check that no
 * plan is needed is counted. What the triggers, indexes and statements of the hot path cost.
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
  const f = flags(args, { tasks: 10_000, agents: 10 });
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
    done += claims.reduce((n, c) => n + c.tasks.length, 0);
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
