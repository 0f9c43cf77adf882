import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { Pool } from 'undici';
import { listeningUrl } from '../test/helpers.js';
import { rssMbOf } from './lib.js';

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
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.body.text();
    return { status: res.statusCode, body: (text ? JSON.parse(text) : undefined) as T };
  }

  close(): Promise<void> {
    return this.pool.close();
  }
}

export async function startBareFastify(): Promise<{ url: string; rssMb(): number; stop(): Promise<void> }> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(here, 'bare-fastify.ts')], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const url = await listeningUrl(child, 'listening');
  return {
    url,
    rssMb: () => rssMbOf(child.pid!),
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
    requests: [{ method: 'POST', setupRequest: (req) => ({ ...req, path: opts.pathFor(i++) }) }],
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
