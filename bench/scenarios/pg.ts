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
import { Pool } from 'undici';
import { flags, percentile, report, startServerProcess, type Row, type ServerProcess } from '../lib.js';

const DATABASE_URL = process.env.FLEETD_BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const REDIS_URL = process.env.FLEETD_BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';

class Client {
  private readonly pool: Pool;
  constructor(url: string) {
    this.pool = new Pool(url, { connections: 64, pipelining: 1 });
  }
  async call(method: 'GET' | 'POST', path: string, body?: unknown): Promise<{ status: number; body: any }> {
    const res = await this.pool.request({
      method,
      path,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: res.statusCode, body: await res.body.json() };
  }
  close(): Promise<void> {
    return this.pool.close();
  }
}

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
  const clients = nodes.map((n) => new Client(n.url));
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
  const submittedAt = new Map<number, number>();
  const latencies: number[] = [];
  let completed = 0;
  let errors = 0;
  let running = true;
  const deadline = Date.now() + seconds * 1_000;
  const depth = Math.max(500, n * 20);

  const submitters = clients.map(async (client) => {
    while (running) {
      if (submittedAt.size > depth) {
        await new Promise((r) => setTimeout(r, 2));
        continue;
      }
      const res = await client.call('POST', '/v1/tasks/batch', {
        tasks: Array.from({ length: Math.ceil(depth / clients.length) }, (_, i) => ({ type, payload: { i } })),
      });
      if (res.status !== 201) {
        errors++;
        continue;
      }
      const now = performance.now();
      for (const item of res.body.items) submittedAt.set(item.task.id, now);
    }
  });

  const workers = agentIds.map(async ({ id: agentId, client }) => {
    while (Date.now() < deadline) {
      const claim = await client.call('POST', '/v1/tasks/claim', { agentId, max: 10, waitMs: 200 });
      if (claim.status !== 200) {
        errors++;
        continue;
      }
      await Promise.all(
        claim.body.tasks.map(async (t: any) => {
          const res = await client.call('POST', `/v1/tasks/${t.id}/complete`, { agentId, result: { ok: true } });
          if (res.status !== 200) return void errors++;
          completed++;
          const at = submittedAt.get(t.id);
          if (at !== undefined) {
            latencies.push(performance.now() - at);
            submittedAt.delete(t.id);
          }
        }),
      );
    }
  });
  const started = performance.now();
  await Promise.all(workers);
  const elapsed = (performance.now() - started) / 1_000;
  running = false;
  await Promise.all(submitters);
  const round = (v: number) => Math.round(v * 100) / 100;
  return {
    store,
    nodes: clients.length,
    agents: n,
    'tasks/s': Math.round(completed / elapsed),
    p50_ms: round(percentile(latencies, 50)),
    p95_ms: round(percentile(latencies, 95)),
    p99_ms: round(percentile(latencies, 99)),
    errors,
    rss_mb: rssMb(),
  };
}
