/**
 * `npm run bench -- store [--tasks 10000] [--agents 10] [--objects 0] [--pg-objects 0] [--rounds 3]`
 *
 * The store alone, without HTTP: CPU per task of submit (batches of 100), claim (each agent up to
 * 10, all at once) and complete (each task, all at once), on SQLite (a data dir of its own) and on
 * PostgreSQL (FLEETD_BENCH_DATABASE_URL, a schema of its own): this process's CPU and, on
 * PostgreSQL, its backends'. Claims pass core's plan as the service does, so the check that no
 * plan is needed is counted. What the triggers, indexes and statements of the hot path cost.
 *
 * With `--objects 1` (SQLite) or `--pg-objects 1` (PostgreSQL, fleetd's CPU and its backends'
 * together): what each index and trigger of the tasks table costs a task.
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
import { BENCH_DATABASE_URL, cpuMsOf, flags, postgresBackendsOf, report, type Row } from '../lib.js';


export default async function storeScenario(args: string[]): Promise<void> {
  const f = flags(args, { tasks: 10_000, agents: 10, objects: 0, 'pg-objects': 0, rounds: 3 });
  if (f.objects) return objectCosts('sqlite', sqliteSubject(f), f);
  if (f['pg-objects']) return objectCosts('postgres', postgresSubject(f), f);
  const rows: Row[] = [];
  const dir = mkdtempSync(join(tmpdir(), 'fleetd-bench-store-'));
  try {
    rows.push(await measure('sqlite', openSqlite({ dataDir: dir }), f));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const pgDriver = openPostgres({ url: BENCH_DATABASE_URL, schema: `fleetd_bench_store_${process.pid}`, poolSize: 8 });
  try {
    await pgDriver.migrate();
    rows.push(await measure('postgres', pgDriver, f));
  } finally {
    await pgDriver.database.dropSchema();
    await pgDriver.close();
  }
  report('store', rows, { flags: f });
}

interface StoreObject {
  type: 'index' | 'trigger';
  name: string;
}

/** A driver whose tasks table's objects are measured one by one: each measure on a fresh store. */
interface Subject {
  objects(): Promise<StoreObject[]>;
  /** CPU a task (fleetd's and, on PostgreSQL, its backends'), with `drop` dropped first when given. */
  measure(drop?: StoreObject): Promise<number>;
}

const sqliteSubject = (f: Record<string, number>): Subject => {
  const fresh = async <T>(work: (driver: ReturnType<typeof openSqlite>) => Promise<T>): Promise<T> => {
    const dir = mkdtempSync(join(tmpdir(), 'fleetd-bench-store-'));
    const driver = openSqlite({ dataDir: dir });
    try {
      return await work(driver);
    } finally {
      await driver.close();
      rmSync(dir, { recursive: true, force: true });
    }
  };
  return {
    objects: () =>
      fresh(async (driver) =>
        driver.database.db
          .prepare("SELECT type, name FROM sqlite_master WHERE tbl_name = 'tasks' AND type IN ('index', 'trigger') AND sql IS NOT NULL ORDER BY type, name")
          .all() as StoreObject[],
      ),
    measure: (drop) =>
      fresh(async (driver) => {
        try {
          if (drop) driver.database.db.exec(`DROP ${drop.type.toUpperCase()} ${drop.name}`);
        } catch (err) {
          throw new DropRefused((err as Error).message);
        }
        return (await measure('sqlite', driver, f))['cpu µs/task fleetd'] as number;
      }),
  };
};

const postgresSubject = (f: Record<string, number>): Subject => {
  let runs = 0;
  const fresh = async <T>(work: (driver: ReturnType<typeof openPostgres>, schema: string) => Promise<T>): Promise<T> => {
    const schema = `fleetd_bench_objects_${process.pid}_${runs++}`;
    const driver = openPostgres({ url: BENCH_DATABASE_URL, schema, poolSize: 8 });
    try {
      await driver.migrate();
      return await work(driver, schema);
    } finally {
      await driver.database.dropSchema();
      await driver.close();
    }
  };
  return {
    objects: () =>
      fresh(async (driver, schema) => {
        const indexes = await driver.database.query<{ name: string }>(
          "SELECT indexname AS name FROM pg_indexes WHERE schemaname = $1 AND tablename = 'tasks' AND indexname <> 'tasks_pkey' ORDER BY 1",
          [schema],
        );
        const triggers = await driver.database.query<{ name: string }>(
          'SELECT tgname AS name FROM pg_trigger WHERE tgrelid = $1::regclass AND NOT tgisinternal ORDER BY 1',
          [`${schema}.tasks`],
        );
        return [...indexes.map(({ name }) => ({ type: 'index' as const, name })), ...triggers.map(({ name }) => ({ type: 'trigger' as const, name }))];
      }),
    measure: (drop) =>
      fresh(async (driver, schema) => {
        const dropping = drop?.type === 'index' ? `DROP INDEX ${schema}.${drop.name}` : drop ? `DROP TRIGGER ${drop.name} ON ${schema}.tasks` : undefined;
        if (dropping) await driver.database.query(dropping).catch((err: Error) => Promise.reject(new DropRefused(err.message)));
        const row = await measure('postgres', driver, f);
        return (row['cpu µs/task fleetd'] as number) + (row.postgres as number);
      }),
  };
};

class DropRefused extends Error {}

/** Why the hot path cannot do without an object, from what failed without it. */
function neededBecause(err: Error): string {
  if (err instanceof DropRefused) return 'it cannot be dropped (a constraint is behind it)';
  if (/leased nothing/.test(err.message)) return 'claims lease nothing without it';
  return `a statement names it (${err.message})`;
}

async function objectCosts(name: string, subject: Subject, f: Record<string, number>): Promise<void> {
  const objects = await subject.objects();
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const shipped: number[] = [];
  const without = new Map<string, number[]>(objects.map((o) => [o.name, []]));
  const needed = new Map<string, string>();
  for (let round = 0; round < f.rounds; round++) {
    for (const object of objects) {
      shipped.push(await subject.measure());
      // An index behind a constraint cannot go, one a statement names (SQLite's INDEXED BY) fails the
      // statement, and claims lease nothing without a count they read: the object is needed.
      const measured = await subject.measure(object).catch((err: Error) => (needed.set(object.name, neededBecause(err)), Number.NaN));
      without.get(object.name)!.push(measured);
      process.stdout.write(`round ${round + 1}: ${object.type} ${object.name}: ${shipped.at(-1)} µs as shipped, ${without.get(object.name)!.at(-1)} µs without\n`);
    }
  }
  const base = median(shipped);
  const rows: Row[] = [{ object: '(as shipped)', 'cpu µs/task': base, 'saved by dropping it': '' }];
  for (const o of objects) {
    const us = median(without.get(o.name)!);
    const why = needed.get(o.name);
    rows.push({ object: `${o.type} ${o.name}`, 'cpu µs/task': why ? '' : us, 'saved by dropping it': why ? `needed: ${why}` : base - us });
  }
  report(`store-objects-${name}`, rows, { flags: f });
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
  const backends = name === 'postgres' ? await postgresBackendsOf(process.pid, BENCH_DATABASE_URL) : [];
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
