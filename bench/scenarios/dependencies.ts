/**
 * `npm run bench -- dependencies [--tasks 5000] [--fan-in 10] [--agents 10] [--concurrency 20] [--postgres 0|1]`
 * (`--tasks 100000` for the figure; PostgreSQL on FLEETD_BENCH_DATABASE_URL, default
 * postgres://postgres@127.0.0.1:5432/test)
 *
 * Dependency resolution throughput. N tasks form a fan-in tree: each task of a level depends on
 * `fan-in` tasks of the level below, so every completion below the top frees (or counts down) a
 * waiting task in the same transaction. The same number of tasks without dependencies is drained
 * by the same agents (SDK, WebSocket) in the same run on a fresh server. Both drains are timed from
 * the moment the agents start to the moment the counters show every task completed; submission is
 * not timed. Prints both rates and tree ÷ flat (the target: ≥ 0.7).
 */
import { randomUUID } from 'node:crypto';
import { FleetClient, type FleetAgent } from '../../src/client/index.js';
import { BENCH_ADMIN_KEY, BENCH_DATABASE_URL, dropSchemas, flags, report, startServerProcess, type Row } from '../lib.js';


export default async function dependencies(args: string[]): Promise<void> {
  const f = flags(args, { tasks: 5_000, 'fan-in': 10, agents: 10, concurrency: 20, postgres: 0 });
  const levels = treeLevels(f.tasks, f['fan-in']);
  const total = levels.reduce((a, b) => a + b, 0);
  process.stdout.write(`tree of ${total} tasks, levels ${levels.join(' → ')}, fan-in ${f['fan-in']}\n`);
  const flat = await drain('flat', total, f, async (client, type) => {
    for (let i = 0; i < total; i += 1000) {
      await client.submitBatch(Array.from({ length: Math.min(1000, total - i) }, (_, j) => ({ type, payload: { i: i + j } })));
    }
  });
  const tree = await drain('tree', total, f, async (client, type) => {
    let below: number[] = [];
    for (const count of levels) {
      const ids: number[] = [];
      for (let i = 0; i < count; i += 1000) {
        const batch = Array.from({ length: Math.min(1000, count - i) }, (_, j) => {
          const k = i + j;
          const dependsOn = below.slice(k * f['fan-in'], (k + 1) * f['fan-in']);
          return dependsOn.length > 0 ? { type, payload: { k }, dependsOn } : { type, payload: { k } };
        });
        ids.push(...(await client.submitBatch(batch)).map((s) => s.task.id));
      }
      below = ids;
    }
  });
  const rows: Row[] = [
    { tasks: total, shape: 'no dependencies', 'drain tasks/s': flat },
    { tasks: total, shape: `fan-in tree (${levels.length} levels)`, 'drain tasks/s': tree },
    { tasks: total, shape: 'tree ÷ flat', 'drain tasks/s': Math.round((tree / flat) * 100) / 100 },
  ];
  report('dependencies', rows, { flags: f, levels });
}

/** Tasks per level, leaves first, so that each level has ceil(below / fanIn) tasks and the total is about n. */
export function treeLevels(n: number, fanIn: number): number[] {
  // Leaves are about n × (1 − 1/fanIn) of the total; the levels above divide by fanIn down to one.
  let leaves = Math.max(1, Math.round(n * (1 - 1 / fanIn)));
  for (;;) {
    const levels = [leaves];
    while (levels[levels.length - 1] > 1) levels.push(Math.ceil(levels[levels.length - 1] / fanIn));
    if (levels.reduce((a, b) => a + b, 0) <= n || leaves === 1) return levels;
    leaves--;
  }
}

async function drain(
  name: string,
  total: number,
  f: Record<string, number>,
  submit: (client: FleetClient, type: string) => Promise<void>,
): Promise<number> {
  const schema = `fleetd_bench_deps_${randomUUID().slice(0, 8)}`;
  const env: Record<string, string> = { FLEETD_RATE_LIMIT_WRITE: '0', FLEETD_RATE_LIMIT_READ: '0', FLEETD_RATE_LIMIT_CLAIM: '0' };
  if (f.postgres) Object.assign(env, { FLEETD_DATABASE_URL: BENCH_DATABASE_URL, FLEETD_DATABASE_SCHEMA: schema });
  const server = await startServerProcess(env);
  const client = new FleetClient({ url: server.url, apiKey: BENCH_ADMIN_KEY });
  const agents: FleetAgent[] = [];
  try {
    const type = `deps-${randomUUID().slice(0, 8)}`;
    await submit(client, type);
    const start = performance.now();
    for (let a = 0; a < f.agents; a++) {
      const agent = client.agent({ name: `deps-${a}`, capabilities: [type], concurrency: f.concurrency, transport: 'ws' });
      agents.push(agent);
      void agent.work((task) => ({ k: (task.payload as { k?: number }).k ?? 0 }));
    }
    for (;;) {
      const stats = await client.stats();
      if ((stats.tasks.byType[type]?.completed ?? 0) >= total) break;
      if (performance.now() - start > 1_800_000) throw new Error(`${name}: the drain did not finish in 30 minutes`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const ms = performance.now() - start;
    process.stdout.write(`${name}: ${total} tasks drained in ${Math.round(ms)} ms\n`);
    return Math.round((total / ms) * 1000);
  } finally {
    await Promise.all(agents.map((a) => a.stop()));
    await server.stop();
    if (f.postgres) await dropSchemas([schema]);
  }
}
