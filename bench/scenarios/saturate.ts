/**
 * saturate: the ceiling of one fleetd node on this machine.
 *  1. the baseline — a bare Fastify route answering {} — and fleetd's heartbeat route, both at 100
 *     connections from this process; heartbeat's rate is printed as a ratio of the baseline's;
 *  2. submit → claim → complete with more and more agents until throughput stops growing.
 *
 *   npm run bench -- saturate [--seconds 10] [--connections 100] [--stages 10,25,50,100]
 */
import { report, startServerProcess, type Row } from '../lib.js';
import { Client, driveEndToEnd, hammer, startBareFastify } from '../load.js';

export default async function saturate(args: string[]): Promise<void> {
  const seconds = Number(argValue(args, '--seconds') ?? 10);
  const connections = Number(argValue(args, '--connections') ?? 100);
  const stages = (argValue(args, '--stages') ?? '10,25,50,100').split(',').map(Number);
  const rows: Row[] = [];

  const bare = await startBareFastify();
  const baseline = await hammer(bare.url, { connections, seconds, pathFor: () => '/bare' });
  await bare.stop();
  rows.push({ scenario: 'bare fastify POST {}', connections, 'req/s': baseline.rps, p50_ms: baseline.p50, p95_ms: baseline.p95, p99_ms: baseline.p99, errors: baseline.errors + baseline.non2xx, ratio: 1 });

  const server = await startServerProcess();
  const client = new Client(server.url);
  try {
    // 10,000 agents, so that each heartbeats a few times a second — as a fleet does — and the
    // per-agent heartbeat limit (10/s by default) is part of the cost measured, not a wall hit.
    const agents: string[] = [];
    for (let i = 0; i < 10_000; i += 1_000) {
      const batch = await client.call('POST', '/v1/agents/batch', {
        agents: Array.from({ length: 1_000 }, (_, k) => ({ name: `hb-${i + k}`, capabilities: ['hb'] })),
      });
      agents.push(...batch.body.items.map((r: any) => r.agent.id));
    }
    const hb = await hammer(server.url, { connections, seconds, pathFor: (i) => `/v1/agents/${agents[i % agents.length]}/heartbeat` });
    rows.push({
      scenario: 'fleetd heartbeat (10,000 agents)',
      connections,
      'req/s': hb.rps,
      p50_ms: hb.p50,
      p95_ms: hb.p95,
      p99_ms: hb.p99,
      errors: hb.errors + hb.non2xx,
      ratio: Math.round((hb.rps / baseline.rps) * 100) / 100,
      rss_mb: server.rssMb(),
    });

    for (const n of stages) rows.push(await endToEnd(client, n, seconds, server.rssMb));
  } finally {
    await client.close();
    await server.stop();
  }
  report('saturate', rows, { seconds, connections, stages });
}

/** n agents claiming up to 10 at a time and completing each, while a submitter keeps the queue fed in batches. */
async function endToEnd(client: Client, n: number, seconds: number, rssMb: () => number): Promise<Row> {
  const type = `sat-${n}`;
  const reg = await client.call('POST', '/v1/agents/batch', {
    agents: Array.from({ length: n }, (_, k) => ({ name: `sat-${n}-${k}`, capabilities: [type], maxConcurrency: 10 })),
  });
  // Keep about two rounds of claims queued: enough that agents never starve, few enough that the
  // latency measured is the system's, not time spent waiting behind a deep backlog.
  const depth = Math.max(500, n * 20);
  const r = await driveEndToEnd({
    clients: [client],
    agents: reg.body.items.map((item: any) => ({ id: item.agent.id, client })),
    type,
    seconds,
    depth,
    batch: Math.min(500, depth),
  });
  return {
    scenario: `submit→claim→complete, ${n} agents`,
    connections: Math.min(n * 11, 128),
    'tasks/s': r.tasksPerSecond,
    p50_ms: r.p50,
    p95_ms: r.p95,
    p99_ms: r.p99,
    errors: r.errors,
    rss_mb: rssMb(),
  };
}

function argValue(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}
