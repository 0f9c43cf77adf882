/**
 * pg: submit → claim → complete saturation on embedded SQLite (one node), on PostgreSQL with one
 * node, and on PostgreSQL + Redis with two nodes, in the same run on the same machine.
 *
 *   npm run bench -- pg [--seconds 10] [--agents 50]
 *
 * Each configuration gets fresh state: a new data dir for SQLite, a new schema and Redis prefix for
 * PostgreSQL. With two nodes, agents and the submitter alternate between them, as behind a load
 * balancer. The load is driven from this process.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { flags, report, startServerProcess, type Row, type ServerProcess } from '../lib.js';
import { Client, driveEndToEnd } from '../load.js';

const DATABASE_URL = process.env.FLEETD_BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const REDIS_URL = process.env.FLEETD_BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';

export default async function pgScenario(args: string[]): Promise<void> {
  const { seconds, agents } = flags(args, { seconds: 10, agents: 50 });
  const rows: Row[] = [];
  rows.push(await measure('sqlite', 1, {}, seconds, agents));
  const schema = `fleetd_bench_${randomBytes(4).toString('hex')}`;
  rows.push(await measure('postgres', 1, { FLEETD_DATABASE_URL: DATABASE_URL, FLEETD_DATABASE_SCHEMA: schema }, seconds, agents));
  const schema2 = `${schema}_2`;
  rows.push(
    await measure('postgres + redis', 2, {
      FLEETD_DATABASE_URL: DATABASE_URL,
      FLEETD_DATABASE_SCHEMA: schema2,
      FLEETD_REDIS_URL: REDIS_URL,
      FLEETD_REDIS_PREFIX: `${schema2}:`,
    }, seconds, agents),
  );
  const client = new pg.Client({ connectionString: DATABASE_URL });
  await client.connect();
  for (const s of [schema, schema2]) await client.query(`DROP SCHEMA IF EXISTS ${s} CASCADE`);
  await client.end();
  const base = rows[0]['tasks/s'] as number;
  for (const row of rows) row.ratio = Math.round(((row['tasks/s'] as number) / base) * 100) / 100;
  report('pg', rows, { seconds, agents, note: 'ratio is tasks/s against SQLite on one node in the same run' });
}

async function measure(store: string, nodeCount: number, env: Record<string, string>, seconds: number, agentCount: number): Promise<Row> {
  const nodes: ServerProcess[] = [];
  // The first node migrates; the others find the schema ready.
  for (let i = 0; i < nodeCount; i++) nodes.push(await startServerProcess(env));
  const clients = nodes.map((n) => new Client(n.url, 64));
  try {
    return await endToEnd(store, clients, seconds, agentCount, () => nodes.reduce((mb, n) => mb + n.rssMb(), 0));
  } finally {
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all(nodes.map((n) => n.stop()));
  }
}

/** Agents claiming up to 10 at a time and completing each, while submitters keep the queue fed in batches. */
async function endToEnd(store: string, clients: Client[], seconds: number, n: number, rssMb: () => number): Promise<Row> {
  const type = 'pg-bench';
  const agentIds: { id: string; client: Client }[] = [];
  for (let k = 0; k < n; k++) {
    const client = clients[k % clients.length];
    const res = await client.call('POST', '/v1/agents', { name: `bench-${k}`, capabilities: [type], maxConcurrency: 10 });
    agentIds.push({ id: res.body.agent.id, client });
  }
  const depth = Math.max(500, n * 20);
  const r = await driveEndToEnd({ clients, agents: agentIds, type, seconds, depth, batch: Math.ceil(depth / clients.length) });
  return {
    store,
    nodes: clients.length,
    agents: n,
    'tasks/s': r.tasksPerSecond,
    p50_ms: r.p50,
    p95_ms: r.p95,
    p99_ms: r.p99,
    errors: r.errors,
    rss_mb: rssMb(),
  };
}
