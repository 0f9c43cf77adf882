import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Api, newAdminKey } from '../helpers.js';
import { TEST_DATABASE_URL, uniqueSchema } from '../store/postgres.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '../..');

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

export interface NodeProcess {
  url: string;
  api: Api;
  child: ChildProcess;
  /** Everything it wrote to stdout and stderr so far. */
  output(): string;
  /** SIGKILL: no shutdown, no goodbye. */
  kill(): Promise<void>;
  stop(): Promise<void>;
}

/** A real `fleetd start` process on a free port; resolves once it says it is listening. */
export function startNode(env: Record<string, string>): Promise<NodeProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(root, 'src/cli/main.ts'), 'start'], {
    cwd: root,
    env: { ...process.env, FLEETD_HOST: '127.0.0.1', FLEETD_PORT: '0', FLEETD_LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const end = async (signal: NodeJS.Signals) => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    await exited;
  };
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    child.stderr!.on('data', (d) => (err += d));
    child.once('exit', (code) => reject(new Error(`fleetd exited with ${code}: ${err}`)));
    child.stdout!.on('data', (d) => {
      out += d;
      const url = /"url":"(http:[^"]+)"/.exec(out)?.[1];
      if (url && out.includes('fleetd is listening')) {
        resolve({ url, api: new Api(url, env.FLEETD_ADMIN_KEY), child, output: () => out + err, kill: () => end('SIGKILL'), stop: () => end('SIGTERM') });
      }
    });
  });
}
