/**
 * `npm run bench -- fair [--tasks 20000] [--keys 1000] [--perKey 5] [--concurrency 50] [--big 10000] [--small 100] [--pg 0]`
 *
 * Fair sharing, in one run (with --pg 1 on PostgreSQL at FLEETD_BENCH_DATABASE_URL, default
 * postgres://postgres@127.0.0.1:5432/test, a schema of its own):
 *
 * 1. Claim throughput with keys and a limit per key, as a ratio of the same load without: N tasks
 *    spread over K concurrency keys with maxConcurrencyPerKey on their type, drained by one SDK agent
 *    over WebSocket at the given concurrency; then N tasks with no key and no policy, the same way.
 *    Target: keyed ÷ plain ≥ 0.8.
 * 2. The fairness figure: one key with `big` queued tasks submitted first, then nine keys with
 *    `small` each, all at one priority, drained the same way. Reported: how much of the big key was
 *    done when the last of the nine keys' tasks finished. Target: under 15 %.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { FleetClient } from '../../src/client/index.js';
import { BENCH_ADMIN_KEY, BENCH_DATABASE_URL, authHeaders, dropSchemas, flags, report, startServerProcess, untilCompleted, type Row, type ServerProcess } from '../lib.js';


export default async function fair(args: string[]): Promise<void> {
  const f = flags(args, { tasks: 20_000, keys: 1_000, perKey: 5, concurrency: 50, big: 10_000, small: 100, pg: 0 });
  const rows: Row[] = [];
  const plain = await drain(f, 'plain', (i) => ({ payload: { i } }));
  const keyed = await drain(f, 'keyed', (i) => ({ payload: { i }, concurrencyKey: `key-${i % f.keys}` }), { maxConcurrencyPerKey: f.perKey });
  rows.push({ load: `${f.tasks} tasks, no keys`, 'drain tasks/s': plain.rate });
  rows.push({ load: `${f.tasks} tasks, ${f.keys} keys, ≤ ${f.perKey} per key`, 'drain tasks/s': keyed.rate });
  rows.push({ load: 'keyed ÷ plain (target ≥ 0.8)', 'drain tasks/s': Math.round((keyed.rate / plain.rate) * 100) / 100 });
  const share = await fairness(f);
  rows.push({ load: `big key ${f.big} + 9 keys × ${f.small}: big key done when the nine finished (target < 15 %)`, 'drain tasks/s': `${share} %` });
  report('fair', rows, { flags: f, driver: f.pg ? 'postgres' : 'sqlite' });
}

async function withServer<T>(f: Record<string, number>, work: (server: ServerProcess, client: FleetClient) => Promise<T>): Promise<T> {
  const schema = `fleetd_bench_${randomBytes(4).toString('hex')}`;
  const store: Record<string, string> = f.pg ? { FLEETD_DATABASE_URL: BENCH_DATABASE_URL, FLEETD_DATABASE_SCHEMA: schema } : {};
  const server = await startServerProcess({ ...store, FLEETD_RATE_LIMIT_WRITE: '0', FLEETD_RATE_LIMIT_READ: '0', FLEETD_RATE_LIMIT_CLAIM: '0' });
  try {
    return await work(server, new FleetClient({ url: server.url, apiKey: BENCH_ADMIN_KEY }));
  } finally {
    await server.stop();
    if (f.pg) await dropSchemas([schema]);
  }
}

async function drain(
  f: Record<string, number>,
  label: string,
  task: (i: number) => { payload: unknown; concurrencyKey?: string },
  policy?: Record<string, number>,
): Promise<{ rate: number }> {
  process.stdout.write(`\n— ${label}: ${f.tasks} tasks —\n`);
  return withServer(f, async (server, client) => {
    const type = `fair-${randomUUID().slice(0, 8)}`;
    if (policy) await put(server, type, policy);
    for (let i = 0; i < f.tasks; i += 1000) {
      await client.submitBatch(Array.from({ length: Math.min(1000, f.tasks - i) }, (_, j) => ({ type, ...task(i + j) })));
    }
    const agent = client.agent({ name: label, capabilities: [type], concurrency: f.concurrency, transport: 'ws' });
    const start = performance.now();
    void agent.work(() => ({ ok: true }));
    try {
      await untilCompleted(client, type, f.tasks, DRAIN_WAIT);
    } finally {
      await agent.stop();
    }
    const ms = performance.now() - start;
    process.stdout.write(`drained in ${Math.round(ms)} ms\n`);
    return { rate: Math.round((f.tasks / ms) * 1000) };
  });
}

async function fairness(f: Record<string, number>): Promise<number> {
  process.stdout.write(`\n— fairness: one key × ${f.big}, nine keys × ${f.small} —\n`);
  return withServer(f, async (_server, client) => {
    const type = `fair-${randomUUID().slice(0, 8)}`;
    const submit = async (key: string, n: number) => {
      for (let i = 0; i < n; i += 1000) await client.submitBatch(Array.from({ length: Math.min(1000, n - i) }, () => ({ type, concurrencyKey: key })));
    };
    await submit('big', f.big);
    for (let k = 0; k < 9; k++) await submit(`small-${k}`, f.small);
    const order: string[] = [];
    const total = f.big + 9 * f.small;
    const agent = client.agent({ name: 'fairness', capabilities: [type], concurrency: f.concurrency, transport: 'ws' });
    void agent.work((t) => {
      order.push(t.concurrencyKey ?? '');
      return { ok: true };
    });
    try {
      await untilCompleted(client, type, total, DRAIN_WAIT);
    } finally {
      await agent.stop();
    }
    let smallLeft = 9 * f.small;
    let bigDone = 0;
    for (const key of order) {
      if (key === 'big') bigDone++;
      else if (--smallLeft === 0) break;
    }
    const share = Math.round((bigDone / f.big) * 1000) / 10;
    process.stdout.write(`the nine keys were done when ${bigDone} of the big key's ${f.big} were (${share} %)\n`);
    return share;
  });
}

async function put(server: ServerProcess, type: string, policy: Record<string, number>): Promise<void> {
  const res = await fetch(`${server.url}/v1/types/${type}`, { method: 'PUT', headers: { ...authHeaders, 'content-type': 'application/json' }, body: JSON.stringify(policy) });
  if (res.status !== 200) throw new Error(`PUT /v1/types/${type}: ${res.status} ${await res.text()}`);
}

/** How its drains wait to be done. Its figures compare runs that wait alike. */
const DRAIN_WAIT = { everyMs: 20, timeoutMs: 900_000 };
