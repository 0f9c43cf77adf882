/**
 * octopus (report 000): 20 clients that heartbeat every 10 s and poll for tasks every 5 s, a
 * dashboard reading stats every 10 s, and work arriving steadily — with time compressed ×100
 * (heartbeat every 100 ms, poll every 50 ms). The report's bar: every client answered in < 1 s,
 * zero lock timeouts, 99 %+ success.
 *
 *   npm run bench -- octopus [--clients 20] [--seconds 30] [--speedup 100]
 */
import { flags, percentile, report, startServerProcess, type Row } from '../lib.js';
import { Client } from '../load.js';

export default async function octopus(args: string[]): Promise<void> {
  const f = flags(args, { clients: 20, seconds: 30, speedup: 100 });
  const heartbeatMs = 10_000 / f.speedup;
  const pollMs = 5_000 / f.speedup;
  const dashboardMs = 10_000 / f.speedup;
  const submitMs = 1_000 / f.speedup; // one new task per second of the original system's time

  // Compressing time ×100 makes every client 100× chattier than a real one: the per-agent limits,
  // meant for real agents, would refuse it, so they are off here.
  const server = await startServerProcess({ FLEETD_RATE_LIMIT_HEARTBEAT: '0', FLEETD_RATE_LIMIT_CLAIM: '0' });
  const client = new Client(server.url, 64);
  const samples: Record<string, { ms: number[]; ok: number; failed: number }> = {};
  const record = async (name: string, call: () => Promise<{ status: number }>) => {
    const s = (samples[name] ??= { ms: [], ok: 0, failed: 0 });
    const started = performance.now();
    try {
      const res = await call();
      s.ms.push(performance.now() - started);
      if (res.status < 400) s.ok++;
      else s.failed++;
    } catch {
      s.failed++;
    }
  };
  const every = (ms: number, fn: () => Promise<void>, until: number) =>
    (async () => {
      // Spread the clients' phases like real clients started at different moments.
      await new Promise((r) => setTimeout(r, Math.random() * ms));
      while (Date.now() < until) {
        const next = Date.now() + ms;
        await fn();
        await new Promise((r) => setTimeout(r, Math.max(0, next - Date.now())));
      }
    })();

  try {
    const until = Date.now() + f.seconds * 1_000;
    const clients = await Promise.all(
      Array.from({ length: f.clients }, async (_, i) => {
        const res = await client.call('POST', '/v1/agents', { name: `octopus-${i}`, capabilities: ['plugin'] });
        return res.body.agent.id as string;
      }),
    );
    let completed = 0;
    const loops = [
      every(submitMs, () => record('submit task', () => client.call('POST', '/v1/tasks', { type: 'plugin', payload: { text: 'crawl acme.com' } })), until),
      every(dashboardMs, () => record('dashboard stats', () => client.call('GET', '/v1/stats')), until),
      ...clients.flatMap((id) => [
        every(heartbeatMs, () => record('heartbeat', () => client.call('POST', `/v1/agents/${id}/heartbeat`)), until),
        every(pollMs, async () => {
          let tasks: any[] = [];
          await record('poll for tasks', async () => {
            const res = await client.call('POST', '/v1/tasks/claim', { agentId: id, max: 5 });
            tasks = res.body.tasks ?? [];
            return res;
          });
          for (const t of tasks) {
            await record('complete task', () => client.call('POST', `/v1/tasks/${t.id}/complete`, { agentId: id, result: { ok: true } }));
            completed++;
          }
        }, until),
      ]),
    ];
    await Promise.all(loops);
    const rows: Row[] = Object.entries(samples).map(([name, s]) => ({
      request: name,
      count: s.ok + s.failed,
      'success %': Math.round((s.ok / Math.max(1, s.ok + s.failed)) * 10_000) / 100,
      p50_ms: round(percentile(s.ms, 50)),
      p95_ms: round(percentile(s.ms, 95)),
      p99_ms: round(percentile(s.ms, 99)),
      max_ms: round(Math.max(...s.ms)),
    }));
    const all = Object.values(samples);
    const total = all.reduce((n, s) => n + s.ok + s.failed, 0);
    const ok = all.reduce((n, s) => n + s.ok, 0);
    const worst = Math.max(...all.flatMap((s) => s.ms));
    rows.push({ request: 'all', count: total, 'success %': round((ok / total) * 100), p50_ms: NaN, p95_ms: NaN, p99_ms: NaN, max_ms: round(worst) });
    report('octopus', rows, { ...f, completed, rssMb: server.rssMb(), requestsPerSecond: round(total / f.seconds) });
    process.stdout.write(`\n${round(total / f.seconds)} req/s for ${f.clients} clients at ×${f.speedup}; tasks completed ${completed}; server RSS ${server.rssMb()} MB; slowest response ${round(worst)} ms (target < 1000)\n`);
  } finally {
    await client.close();
    await server.stop();
  }
}

const round = (v: number) => Math.round(v * 100) / 100;
