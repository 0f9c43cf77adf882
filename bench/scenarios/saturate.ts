/**
 * saturate: the ceiling of one fleetd node on this machine.
 *  1. the baseline — a bare Fastify route answering {} — and fleetd's heartbeat route, both at 100
 *     connections from this process; heartbeat's rate is printed as a ratio of the baseline's;
 *  2. submit → claim → complete with more and more agents until throughput stops growing.
 *
 *   npm run bench -- saturate [--seconds 10] [--connections 100] [--stages 10,25,50,100]
 */
import { percentile, report, startServerProcess, type Row } from '../lib.js';
import { Client, hammer, startBareFastify } from '../load.js';

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
    const agents: string[] = [];
    for (let i = 0; i < 1_000; i += 500) {
      const batch = await client.call('POST', '/v1/agents/batch', {
        agents: Array.from({ length: 500 }, (_, k) => ({ name: `hb-${i + k}`, capabilities: ['hb'] })),
      });
      agents.push(...batch.body.items.map((r: any) => r.agent.id));
    }
    const hb = await hammer(server.url, { connections, seconds, pathFor: (i) => `/v1/agents/${agents[i % agents.length]}/heartbeat` });
    rows.push({
      scenario: 'fleetd heartbeat',
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
  const agentIds: string[] = reg.body.items.map((r: any) => r.agent.id);
  const submittedAt = new Map<number, number>();
  const latencies: number[] = [];
  let completed = 0;
  let errors = 0;
  let running = true;
  const deadline = Date.now() + seconds * 1_000;

  // Keep about two rounds of claims queued: enough that agents never starve, few enough that the
  // latency measured is the system's, not time spent waiting behind a deep backlog.
  const depth = Math.max(500, n * 20);
  const submitter = (async () => {
    while (running) {
      if (submittedAt.size > depth) {
        await new Promise((r) => setTimeout(r, 2));
        continue;
      }
      const res = await client.call('POST', '/v1/tasks/batch', {
        tasks: Array.from({ length: Math.min(500, depth) }, (_, i) => ({ type, payload: { i } })),
      });
      if (res.status !== 201) {
        errors++;
        continue;
      }
      const now = performance.now();
      for (const item of res.body.items) submittedAt.set(item.task.id, now);
    }
  })();

  const workers = agentIds.map(async (agentId) => {
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
  await submitter;
  const round = (v: number) => Math.round(v * 100) / 100;
  return {
    scenario: `submit→claim→complete, ${n} agents`,
    connections: Math.min(n * 11, 128),
    'tasks/s': Math.round(completed / elapsed),
    p50_ms: round(percentile(latencies, 50)),
    p95_ms: round(percentile(latencies, 95)),
    p99_ms: round(percentile(latencies, 99)),
    errors,
    rss_mb: rssMb(),
  };
}

function argValue(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}
