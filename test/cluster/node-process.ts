import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { rmSync } from 'node:fs';
import { type Api, newAdminKey, startFleetdProcess, tempDir } from '../helpers.js';
import { after, before } from 'node:test';
import { TEST_DATABASE_URL, dropSchema, uniqueSchema } from '../store/postgres.js';

export const TEST_REDIS_URL = process.env.FLEETD_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

/** Settings that make several `fleetd start` processes one cluster: one schema, one Redis prefix. */
export function clusterEnv(): Record<string, string> {
  return {
    FLEETD_DATABASE_URL: TEST_DATABASE_URL,
    FLEETD_DATABASE_SCHEMA: uniqueSchema('fleetd_cluster'),
    FLEETD_REDIS_URL: TEST_REDIS_URL,
    FLEETD_REDIS_PREFIX: `fleetd-test-${randomBytes(4).toString('hex')}:`,
    FLEETD_ADMIN_KEY: newAdminKey(),
  };
}

/** How long stop() lets a node shut down after SIGTERM before it SIGKILLs it. */
const STOP_GRACE_MS = 3_000;

export interface NodeProcess {
  url: string;
  api: Api;
  child: ChildProcess;
  /** Everything it wrote to stdout and stderr so far. */
  output(): string;
  /** SIGKILL: no shutdown, no goodbye. */
  kill(): Promise<void>;
  /** SIGTERM, then SIGKILL if it has not exited within 3 s. */
  stop(): Promise<void>;
}

/**
 * A real `fleetd start` process on a free port (startFleetdProcess); resolves once it listens. Its
 * data folder is env.FLEETD_DATA_DIR, or a temporary one deleted when it stops.
 */
export async function startNode(env: Record<string, string>): Promise<NodeProcess> {
  const ownDir = env.FLEETD_DATA_DIR === undefined ? tempDir('fleetd-node-') : undefined;
  const { child, api } = await startFleetdProcess(env.FLEETD_DATA_DIR ?? ownDir!, env, { stderr: 'pipe' });
  const end = async (signal: NodeJS.Signals) => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = once(child, 'exit');
      child.kill(signal);
      // A node's own shutdown may wait up to 10 s on its connections; the tests that stop nodes
      // do not test that wait (test/server.graceful-shutdown.test.ts does), so it is cut short.
      const timer = signal === 'SIGKILL' ? undefined : setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
      try {
        await exited;
      } finally {
        clearTimeout(timer);
      }
    }
    if (ownDir) rmSync(ownDir, { recursive: true, force: true });
  };
  // Kept for tests that read what a node said after it started (its warnings, an unhandled error event).
  let output = '';
  child.stdout!.on('data', (d) => (output += d));
  child.stderr!.on('data', (d) => (output += d));
  return { url: api.base, api, child, output: () => output, kill: () => end('SIGKILL'), stop: () => end('SIGTERM') };
}

/**
 * Two nodes on one fresh PostgreSQL schema and Redis prefix for the describe block this is called
 * in: started one at a time in `before` (so that `after` stops the first whatever becomes of the
 * second), stopped and the schema dropped in `after`. Read `a` and `b` inside the tests. `settings`
 * (FLEETD_* variables) go to both.
 */
export function twoNodes(settings: Record<string, string> = {}): { readonly env: Record<string, string>; readonly a: NodeProcess; readonly b: NodeProcess } {
  const env = { ...clusterEnv(), ...settings };
  const nodes: NodeProcess[] = [];
  before(async () => {
    nodes.push(await startNode(env));
    nodes.push(await startNode(env));
  });
  after(async () => {
    await Promise.all(nodes.map((node) => node.stop()));
    await dropSchema(env.FLEETD_DATABASE_SCHEMA);
  });
  return {
    env,
    get a() {
      return nodes[0];
    },
    get b() {
      return nodes[1];
    },
  };
}
