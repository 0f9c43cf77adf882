/**
 * Report 002: does background pipeline work slow the interactive API? 20 clients call GET /v1/stats
 * and GET /v1/tasks in a loop, first with the server idle, then while `--runs` complaint pipelines
 * (examples/complaints: simulated provider, 3–10 s a step) run. Prints both endpoints' P50/P99 in
 * each phase and the server's event-loop lag; then starts `--big` runs and reports the RSS with
 * all of them in flight.
 *
 *   npm run bench -- complaints [--runs 50] [--clients 20] [--seconds 15] [--big 1000]
 */
import { join } from 'node:path';
import { Pool } from 'undici';
import { authHeaders, flags, percentile, report, startServerProcess, type Row } from '../lib.js';

/**
 * The clients' loop. `/v1/stats` reports the event-loop lag since its previous read, and the
 * clients read it many times a second, so the lag of the phase is taken from every answer they get.
 */
async function measure(pool: Pool, clients: number, seconds: number): Promise<{ samples: Record<string, number[]>; lagMs: number[] }> {
  const samples: Record<string, number[]> = { '/v1/stats': [], '/v1/tasks?limit=20': [] };
  const lagMs: number[] = [];
  const deadline = Date.now() + seconds * 1000;
  await Promise.all(
    Array.from({ length: clients }, async (_, i) => {
      const path = i % 2 === 0 ? '/v1/stats' : '/v1/tasks?limit=20';
      while (Date.now() < deadline) {
        const started = performance.now();
        const res = await pool.request({ method: 'GET', path, headers: authHeaders });
        const text = await res.body.text();
        if (res.statusCode !== 200) throw new Error(`${path} answered ${res.statusCode}`);
        samples[path].push(performance.now() - started);
        if (path === '/v1/stats') lagMs.push((JSON.parse(text) as { eventLoop: { lagMaxMs: number } }).eventLoop.lagMaxMs);
      }
    }),
  );
  return { samples, lagMs };
}

async function startRuns(pool: Pool, n: number, offset: number): Promise<void> {
  const words = ['bins', 'noise', 'potholes', 'streetlights', 'buses', 'water', 'parking', 'graffiti'];
  for (let i = 0; i < n; i += 500) {
    const runs = Array.from({ length: Math.min(500, n - i) }, (_, j) => {
      const k = offset + i + j;
      return { input: { text: `Complaint ${k}: the ${words[k % words.length]} on street ${k % 17} have been a problem for weeks` } };
    });
    const res = await pool.request({
      method: 'POST',
      path: '/v1/pipelines/complaint/runs/batch',
      headers: { ...authHeaders, 'content-type': 'application/json' },
      body: JSON.stringify({ runs }),
    });
    const text = await res.body.text();
    if (res.statusCode !== 201) throw new Error(`starting runs failed: ${res.statusCode} ${text}`);
  }
}

async function runsInFlight(pool: Pool): Promise<number> {
  const res = await pool.request({ method: 'GET', path: '/v1/pipelines/stats', headers: authHeaders });
  return ((await res.body.json()) as { lane: { runsActive: number } }).lane.runsActive;
}

export default async function complaints(args: string[]): Promise<void> {
  const f = flags(args, { runs: 50, clients: 20, seconds: 15, big: 1000 });
  const server = await startServerProcess({
    FLEETD_PIPELINES_FILE: join(process.cwd(), 'examples/complaints/pipelines.yaml'),
    FLEETD_PIPELINE_CONCURRENCY: '2000',
  });
  const pool = new Pool(server.url, { connections: f.clients + 4 });
  const rows: Row[] = [];
  const phase = (name: string, { samples, lagMs }: { samples: Record<string, number[]>; lagMs: number[] }) => {
    for (const [path, values] of Object.entries(samples)) {
      rows.push({
        phase: name,
        endpoint: path,
        requests: values.length,
        p50Ms: percentile(values, 50),
        p99Ms: percentile(values, 99),
        loopLagP99Ms: percentile(lagMs, 99),
        loopLagMaxMs: Math.max(0, ...lagMs),
        rssMb: server.rssMb(),
      });
    }
  };
  try {
    await measure(pool, f.clients, 2); // warm-up: JIT, connections
    phase('idle', await measure(pool, f.clients, f.seconds));

    await startRuns(pool, f.runs, 0);
    phase(`${f.runs} runs`, await measure(pool, f.clients, f.seconds));
    const inFlightAfterLoad = await runsInFlight(pool);

    await startRuns(pool, f.big, f.runs);
    phase(`${f.runs + f.big} runs`, await measure(pool, f.clients, f.seconds));
    const inFlightBig = await runsInFlight(pool);

    const failed = await pool.request({ method: 'GET', path: '/v1/pipelines/runs?status=failed&limit=1000', headers: authHeaders });
    const failedRuns = ((await failed.body.json()) as { items: unknown[] }).items.length;
    const idle = rows.filter((r) => r.phase === 'idle');
    const loaded = rows.filter((r) => r.phase === `${f.runs} runs`);
    const ratios = idle.map((r, i) => ({ endpoint: r.endpoint, p99Ratio: Number(loaded[i].p99Ms) / Number(r.p99Ms) }));
    report('complaints', rows, {
      flags: f,
      p99LoadedOverIdle: ratios,
      runsInFlight: { afterLoad: inFlightAfterLoad, afterBig: inFlightBig },
      failedRuns,
      peakRssMb: server.rssMb(),
      note: 'CPU shared with other work when measured; compare ratios within one run',
    });
    for (const r of ratios) process.stdout.write(`P99 with ${f.runs} runs / idle, ${r.endpoint}: ${r.p99Ratio.toFixed(2)}×\n`);
    process.stdout.write(`runs in flight: ${inFlightAfterLoad} then ${inFlightBig}; failed so far: ${failedRuns}; server RSS ${server.rssMb()} MB\n`);
  } finally {
    await pool.close();
    await server.stop();
  }
}
