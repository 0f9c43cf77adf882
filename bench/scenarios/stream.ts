/**
 * `npm run bench -- stream [--seconds 20] [--rate 200] [--readers 10]`
 *
 * One SDK agent streams output into one task at `rate` chunks per second (a chunk every 1000/rate
 * ms, each carrying the time it was written) while `readers` EventSources, in a process of their
 * own, read the task's Server-Sent Events stream. Measured: the server process's CPU over the
 * streaming (as a share of one core), and how late each chunk reaches each reader (P50, P99, max),
 * from ctx.output() in the agent to the reader's event: the SDK's per-tick batching, the store's
 * write, the bus and the SSE write together. Every chunk must reach every reader; the scenario
 * fails otherwise.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { FleetClient } from '../../src/client/index.js';
import { BENCH_ADMIN_KEY, flags, percentile, report, startServerProcess } from '../lib.js';

export default async function stream(args: string[]): Promise<void> {
  const f = flags(args, { seconds: 20, rate: 200, readers: 10 });
  const server = await startServerProcess({ FLEETD_RATE_LIMIT_WRITE: '0', FLEETD_RATE_LIMIT_READ: '0' });
  const client = new FleetClient({ url: server.url, apiKey: BENCH_ADMIN_KEY });
  const agent = client.agent({ name: 'streamer', capabilities: ['bench-stream'], transport: 'ws' });
  let reading: ReturnType<typeof spawn> | undefined;
  try {
    const { task } = await client.submit({ type: 'bench-stream', payload: {} });
    reading = spawn(process.execPath, ['--import', 'tsx', 'bench/workers/sse-readers.ts'], {
      env: { ...process.env, READERS: String(f.readers), STREAM_URL: `${server.url}/v1/tasks/${task.id}/stream?token=${BENCH_ADMIN_KEY}` },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const lines = createInterface({ input: reading.stdout! })[Symbol.asyncIterator]();
    if ((await lines.next()).value !== 'ready') throw new Error('the SSE readers did not open their streams');

    const everyMs = 1000 / f.rate;
    const total = Math.round(f.seconds * f.rate);
    let cpuStart = 0;
    let started = 0;
    await agent.work(async (_task, ctx) => {
      cpuStart = server.cpuMs();
      started = performance.now();
      for (let i = 0; i < total; i++) {
        // Paced against the clock, not by sleeping a fixed time each: the rate holds however late a timer fires.
        const due = started + i * everyMs;
        const wait = due - performance.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        ctx.output(`${Date.now()}|`);
      }
      return { chunks: total };
    });
    const result = JSON.parse(String((await lines.next()).value)) as { lateness: number[]; chunks: number[] };
    const elapsedMs = performance.now() - started;
    const cpuMs = server.cpuMs() - cpuStart;
    await once(reading, 'exit');
    const short = result.chunks.filter((n) => n !== total);
    if (short.length > 0) throw new Error(`readers missed chunks: each got ${result.chunks.join(', ')} of ${total}`);
    report(
      'stream',
      [
        {
          'chunks/s': Math.round((total / elapsedMs) * 1000),
          readers: f.readers,
          'server CPU % of a core': Math.round((cpuMs / elapsedMs) * 1000) / 10,
          'lateness P50 ms': percentile(result.lateness, 50),
          'lateness P99 ms': percentile(result.lateness, 99),
          'lateness max ms': Math.max(...result.lateness),
        },
      ],
      { flags: f },
    );
  } finally {
    reading?.kill('SIGKILL');
    await agent.stop({ timeoutMs: 1_000 });
    await server.stop();
  }
}
