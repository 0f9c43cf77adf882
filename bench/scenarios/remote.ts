/**
 * `npm run bench -- remote [--tasks 300] [--delay 5] [--concurrency 1]`
 *
 * An SDK agent away from its server: one agent at `--concurrency` takes `--tasks` tasks submitted
 * beforehand, over WebSocket, through a real TCP proxy that delays every chunk `--delay` ms each
 * way (Nagle off, as a WebSocket's sockets are). On localhost a task's round trips cost next to
 * nothing; here each one costs twice the delay, so the rate shows how many a task takes. The
 * handler does nothing.
 */
import { createServer, connect, type AddressInfo, type Socket } from 'node:net';
import { FleetClient } from '../../src/client/index.js';
import { BENCH_ADMIN_KEY, flags, report, startServerProcess } from '../lib.js';

export default async function remote(args: string[]): Promise<void> {
  const f = flags(args, { tasks: 300, delay: 5, concurrency: 1 });
  const server = await startServerProcess({ FLEETD_RATE_LIMIT_WRITE: '0', FLEETD_RATE_LIMIT_READ: '0', FLEETD_RATE_LIMIT_CLAIM: '0' });
  const sockets = new Set<Socket>();
  // Each chunk waits `delay` ms, in order: a link with latency, not a slow one.
  const delayed = (from: Socket, to: Socket) =>
    from.on('data', (chunk) => {
      from.pause();
      setTimeout(() => {
        to.write(chunk);
        from.resume();
      }, f.delay);
    });
  const proxy = createServer((client) => {
    const upstream = connect(Number(new URL(server.url).port), '127.0.0.1');
    for (const s of [client, upstream]) {
      s.setNoDelay(true);
      s.on('error', () => {});
      sockets.add(s);
    }
    delayed(client, upstream);
    delayed(upstream, client);
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  const admin = new FleetClient({ url: server.url, apiKey: BENCH_ADMIN_KEY });
  const far = new FleetClient({ url: `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`, apiKey: BENCH_ADMIN_KEY });
  const agent = far.agent({ name: 'remote', capabilities: ['remote'], concurrency: f.concurrency, transport: 'ws' });
  try {
    for (let i = 0; i < f.tasks; i += 1000) await admin.submitBatch(Array.from({ length: Math.min(1000, f.tasks - i) }, (_, j) => ({ type: 'remote', payload: i + j })));
    process.stdout.write(`\n— ${f.tasks} tasks, one agent at concurrency ${f.concurrency}, ${f.delay} ms each way —\n`);
    const started = performance.now();
    await agent.work(() => 'ok');
    while (((await admin.stats()).tasks.byType.remote?.completed ?? 0) < f.tasks) await new Promise((r) => setTimeout(r, 20));
    const ms = performance.now() - started;
    report('remote', [{ agent: `concurrency ${f.concurrency}, ${f.delay} ms each way`, tasks: f.tasks, 'tasks/s': Math.round((f.tasks * 1000) / ms), 'ms a task': Math.round((ms / f.tasks) * 10) / 10 }], { flags: f });
  } finally {
    await agent.stop();
    for (const s of sockets) s.destroy();
    await new Promise((resolve) => proxy.close(resolve));
    await server.stop();
  }
}
