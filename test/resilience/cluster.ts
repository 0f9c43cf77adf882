import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { rmSync } from 'node:fs';
import { FleetClient, type FleetAgent } from '../../src/client/index.js';
import { CuttingProxy } from '../chaos/cutting-proxy.js';
import { startNode, type NodeProcess } from '../cluster/node-process.js';
import { eventually, newAdminKey, tempDir } from '../helpers.js';
import { uniqueSchema } from '../store/postgres.js';
import { Workload } from './workload.js';

/**
 * The test-only hook for unhandled 'error' events: what Node prints when an EventEmitter's 'error'
 * has no listener (and the process dies of it), and what ioredis prints instead of emitting one.
 */
export function unhandledErrorEvents(output: string): string[] {
  return output.split('\n').filter((line) => /Unhandled 'error' event|Unhandled error event|ERR_UNHANDLED_ERROR/.test(line));
}

/** The JSON log lines of a node whose message matches. */
export function logLines(node: NodeProcess, msg: RegExp): { msg: string; dependency?: string }[] {
  return node
    .output()
    .split('\n')
    .flatMap((line) => {
      try {
        const entry = JSON.parse(line);
        return msg.test(entry.msg) ? [entry] : [];
      } catch {
        return [];
      }
    });
}

/**
 * Two `fleetd start` processes sharing a database and a Redis, under a workload. Node 0 reaches both
 * through TCP proxies, so that a test can cut its connections; node 1 connects directly. An extra SDK
 * agent on node 1 takes `cross` tasks only, to show that a task submitted on node 0 reaches it.
 */
export class ResilienceCluster {
  readonly nodes: NodeProcess[] = [];
  readonly adminKey = newAdminKey();
  readonly schema = uniqueSchema('fleetd_resilience');
  workload!: Workload;
  postgresProxy!: CuttingProxy;
  redisProxy!: CuttingProxy;
  private crossAgent: FleetAgent | undefined;
  private readonly crossArrivals = new Map<number, () => void>();
  private readonly crossSeen = new Set<number>();
  private readonly dataDirs: string[] = [];

  /** `env` is added to both nodes' settings (pipelines, say). */
  constructor(
    private readonly databaseUrl: string,
    private readonly redisUrl: string,
    private readonly completedAmong: (schema: string, ids: number[]) => Promise<number[]>,
    private readonly env: Record<string, string> = {},
  ) {}

  async start(): Promise<void> {
    this.postgresProxy = await CuttingProxy.start(this.databaseUrl);
    this.redisProxy = await CuttingProxy.start(this.redisUrl);
    const through = (url: string, proxy: CuttingProxy) => {
      const u = new URL(url);
      u.port = new URL(proxy.url).port;
      return u.href;
    };
    const env = {
      FLEETD_DATABASE_SCHEMA: this.schema,
      FLEETD_REDIS_PREFIX: `fleetd-resilience-${randomBytes(4).toString('hex')}:`,
      FLEETD_ADMIN_KEY: this.adminKey,
      ...this.env,
    };
    const dataDir = () => {
      this.dataDirs.push(tempDir('fleetd-resilience-'));
      return { FLEETD_DATA_DIR: this.dataDirs.at(-1)! };
    };
    // One after the other: the first migrates the schema.
    this.nodes.push(
      await startNode({ ...env, ...dataDir(), FLEETD_DATABASE_URL: through(this.databaseUrl, this.postgresProxy), FLEETD_REDIS_URL: through(this.redisUrl, this.redisProxy) }),
    );
    this.nodes.push(await startNode({ ...env, ...dataDir(), FLEETD_DATABASE_URL: this.databaseUrl, FLEETD_REDIS_URL: this.redisUrl }));
    this.workload = new Workload(this.nodes, this.adminKey, (ids) => this.completedAmong(this.schema, ids), () => this.answered('503'));
    await this.workload.start();
    this.crossAgent = new FleetClient({ url: this.nodes[1].url, apiKey: this.adminKey }).agent({
      name: 'cross',
      capabilities: ['cross'],
      transport: 'ws',
      reconnect: { minMs: 100, maxMs: 1_000 },
    });
    this.crossAgent.on('error', () => {});
    await this.crossAgent.work((task) => {
      this.crossSeen.add(task.id);
      this.crossArrivals.get(task.id)?.();
      return null;
    });
  }

  /** Submits a `cross` task on node 0 (again after a 503) and resolves with ms from its acknowledgement to its arrival at the agent on node 1. */
  async wakeAcross(): Promise<number> {
    const key = `cross-${randomUUID()}`;
    let id: number | undefined;
    await eventually(
      async () => {
        const res = await this.nodes[0].api.post('/v1/tasks', { type: 'cross', idempotencyKey: key });
        if (res.status === 201) id = res.body.task.id;
        return id !== undefined;
      },
      10_000,
      'a cross task accepted on node 0',
    );
    const ackedAt = Date.now();
    if (!this.crossSeen.has(id!)) {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`task ${id} submitted on node 0 did not reach the agent on node 1 within 10 s`)), 10_000);
        this.crossArrivals.set(id!, () => (clearTimeout(timer), resolve()));
      });
    }
    return Date.now() - ackedAt;
  }

  /** Both nodes alive, no unhandled 'error' event printed, every outage logged once and its end once. */
  checkNodes(): void {
    for (const [i, node] of this.nodes.entries()) {
      assert.equal(node.child.exitCode ?? node.child.signalCode, null, `node ${i} is alive`);
      assert.deepEqual(unhandledErrorEvents(node.output()), [], `node ${i} printed no unhandled error event`);
    }
  }

  /** Requests the nodes answered with `status`, from their own metrics. */
  async answered(status: string): Promise<number> {
    let total = 0;
    for (const node of this.nodes) {
      const text = String((await node.api.get('/metrics')).body);
      for (const line of text.split('\n')) {
        if (line.startsWith('fleetd_http_request_duration_seconds_count') && line.includes(`status_code="${status}"`)) total += Number(line.split(' ').at(-1));
      }
    }
    return total;
  }

  async close(): Promise<void> {
    await this.workload?.stop().catch(() => {});
    await this.crossAgent?.stop({ timeoutMs: 1_000 }).catch(() => {});
    await Promise.all(this.nodes.map((n) => n.stop()));
    await this.postgresProxy?.close();
    await this.redisProxy?.close();
    for (const dir of this.dataDirs) rmSync(dir, { recursive: true, force: true });
  }
}

/** A metric's value in a node's /metrics, e.g. metric(node, 'fleetd_dependency_up{dependency="postgres"}'). */
export async function metric(node: NodeProcess, series: string): Promise<number | undefined> {
  const text = String((await node.api.get('/metrics')).body);
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.split(' ').at(-1));
}
