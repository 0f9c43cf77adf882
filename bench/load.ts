import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { Pool } from 'undici';
import { listeningUrl } from '../test/helpers.js';
import { authHeaders, cpuMsOf, percentile, rssMbOf } from './lib.js';

const here = dirname(fileURLToPath(import.meta.url));

/** A JSON client on a keep-alive undici Pool: what an agent fleet looks like to the server. */
export class Client {
  readonly pool: Pool;
  constructor(readonly url: string, connections = 128) {
    this.pool = new Pool(url, { connections, pipelining: 1, keepAliveTimeout: 60_000 });
  }

  async call<T = any>(method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown): Promise<{ status: number; body: T }> {
    const res = await this.pool.request({
      method,
      path,
      headers: body === undefined ? authHeaders : { ...authHeaders, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.body.text();
    return { status: res.statusCode, body: (text ? JSON.parse(text) : undefined) as T };
  }

  close(): Promise<void> {
    return this.pool.close();
  }
}

export async function startBareFastify(): Promise<{ url: string; rssMb(): number; cpuMs(): number; stop(): Promise<void> }> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(here, 'bare-fastify.ts')], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const url = await listeningUrl(child, 'listening');
  return {
    url,
    rssMb: () => rssMbOf(child.pid!),
    cpuMs: () => cpuMsOf(child.pid!),
    async stop() {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    },
  };
}

export interface HammerResult {
  rps: number;
  p50: number;
  p95: number;
  p99: number;
  errors: number;
  non2xx: number;
}

/** Fixed-connection load with autocannon: POST to paths chosen by `pathFor(i)` for `seconds`. */
export async function hammer(url: string, opts: { connections: number; seconds: number; pathFor: (i: number) => string }): Promise<HammerResult> {
  let i = 0;
  const result = await autocannon({
    url,
    connections: opts.connections,
    duration: opts.seconds,
    requests: [{ method: 'POST', headers: authHeaders, setupRequest: (req) => ({ ...req, path: opts.pathFor(i++) }) }],
  });
  // autocannon reports p97.5 and p99 but not p95; p97_5 is the nearest it measures above it.
  const latency = result.latency as unknown as Record<string, number>;
  return {
    rps: Math.round(result.requests.average),
    p50: latency.p50,
    p95: latency.p97_5,
    p99: latency.p99,
    errors: result.errors + result.timeouts,
    non2xx: result.non2xx,
  };
}

export interface EndToEndResult {
  tasksPerSecond: number;
  p50: number;
  p95: number;
  p99: number;
  errors: number;
}

/**
 * submit → claim → complete: each agent claims up to 10 at a time (long-polling 200 ms) and
 * completes each, while one submitter per client keeps about `depth` tasks queued in batches of
 * `batch`. Latency is submit-acknowledged to complete-acknowledged.
 */
export async function driveEndToEnd(o: {
  clients: Client[];
  agents: { id: string; client: Client }[];
  type: string;
  seconds: number;
  depth: number;
  batch: number;
}): Promise<EndToEndResult> {
  const submittedAt = new Map<number, number>();
  const latencies: number[] = [];
  let completed = 0;
  let errors = 0;
  let running = true;
  const deadline = Date.now() + o.seconds * 1_000;

  const submitters = o.clients.map(async (client) => {
    while (running) {
      if (submittedAt.size > o.depth) {
        await new Promise((r) => setTimeout(r, 2));
        continue;
      }
      const res = await client.call('POST', '/v1/tasks/batch', {
        tasks: Array.from({ length: o.batch }, (_, i) => ({ type: o.type, payload: { i } })),
      });
      if (res.status !== 201) {
        errors++;
        continue;
      }
      const now = performance.now();
      for (const item of res.body.items) submittedAt.set(item.task.id, now);
    }
  });

  const workers = o.agents.map(async ({ id: agentId, client }) => {
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
    tasksPerSecond: Math.round(completed / elapsed),
    p50: round(percentile(latencies, 50)),
    p95: round(percentile(latencies, 95)),
    p99: round(percentile(latencies, 99)),
    errors,
  };
}
