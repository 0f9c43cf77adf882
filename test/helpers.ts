import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FleetdConfig } from '../src/config.js';
import type { PipelineSetup } from '../src/pipelines/pipelines.js';
import type { Logger } from 'pino';
import { startServer, type FleetServer } from '../src/server/server.js';
import type { PostgresDriver } from '../src/store/postgres/driver.js';
import { TEST_DATABASE_URL, uniqueSchema } from './store/postgres.js';

export interface Reply<T = any> {
  status: number;
  body: T;
  headers: Headers;
}

/** A fresh admin key, for servers that tests start with it (FLEETD_ADMIN_KEY). */
export const newAdminKey = (): string => `fk_${randomBytes(32).toString('base64url')}`;

/**
 * One admin key per store, so that a server restarted on the same data, or a second node on the
 * same database, is started with the key the first one stored (a later one would be ignored).
 */
const adminKeys = new Map<string, string>();
export function adminKeyFor(store: { dataDir: string; databaseUrl?: string; databaseSchema?: string }): string {
  const id = store.databaseUrl ? `${store.databaseUrl}#${store.databaseSchema ?? 'public'}` : store.dataDir;
  let key = adminKeys.get(id);
  if (!key) adminKeys.set(id, (key = newAdminKey()));
  return key;
}

/** A small JSON client over real HTTP, sending `key` (an API key or agent token) as a Bearer credential. */
export class Api {
  constructor(readonly base: string, readonly key?: string) {}

  /** The same server with another credential, or none. */
  as(key: string | undefined): Api {
    return new Api(this.base, key);
  }

  async request<T = any>(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Reply<T>> {
    const init: RequestInit = { method, headers: { ...(this.key ? { authorization: `Bearer ${this.key}` } : {}), ...headers } };
    if (body !== undefined) {
      init.body = typeof body === 'string' ? body : JSON.stringify(body);
      (init.headers as Record<string, string>)['content-type'] ??= 'application/json';
    }
    const res = await fetch(this.base + path, init);
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = text === '' ? undefined : JSON.parse(text);
    } catch {
      // NDJSON and other non-JSON bodies stay text.
    }
    return { status: res.status, body: parsed as T, headers: res.headers };
  }

  get<T = any>(path: string) {
    return this.request<T>('GET', path);
  }
  post<T = any>(path: string, body?: unknown, headers?: Record<string, string>) {
    return this.request<T>('POST', path, body, headers);
  }
  put<T = any>(path: string, body?: unknown) {
    return this.request<T>('PUT', path, body);
  }
  delete<T = any>(path: string) {
    return this.request<T>('DELETE', path);
  }

  async registerAgent(capabilities: string[] = ['echo'], extra: Record<string, unknown> = {}): Promise<{ id: string; token: string }> {
    const res = await this.post('/v1/agents', { name: 'agent', capabilities, ...extra });
    if (res.status !== 201) throw new Error(`register failed: ${res.status} ${JSON.stringify(res.body)}`);
    return { id: res.body.agent.id, token: res.body.token };
  }

  async submit(task: Record<string, unknown>): Promise<any> {
    const res = await this.post('/v1/tasks', task);
    if (res.status !== 201) throw new Error(`submit failed: ${res.status} ${JSON.stringify(res.body)}`);
    return res.body.task;
  }

  async claim(agentId: string, max = 1, waitMs = 0): Promise<any[]> {
    const res = await this.post('/v1/tasks/claim', { agentId, max, waitMs });
    if (res.status !== 200) throw new Error(`claim failed: ${res.status} ${JSON.stringify(res.body)}`);
    return res.body.tasks;
  }
}

export interface TestServer extends FleetServer {
  /** Sends adminKey on every request. */
  api: Api;
  /** The server's admin key; undefined when it runs with auth off. */
  adminKey: string | undefined;
  dataDir: string;
  /** Closes the server and deletes its data, unless keepData. */
  stop(options?: { keepData?: boolean }): Promise<void>;
}

export function tempDir(prefix = 'fleetd-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/**
 * Starts a server in this process, with auth on and a fresh admin key unless overrides say otherwise;
 * `options.env` stands in for the process environment (the one the config and providers read) and
 * `options.pipelines` are the pipelines it runs; `options.logger` receives its log (none by default).
 */
export async function startTestServer(
  overrides: Partial<FleetdConfig> = {},
  options: { env?: NodeJS.ProcessEnv; pipelines?: PipelineSetup; logger?: Logger } = {},
): Promise<TestServer> {
  const dataDir = overrides.dataDir ?? tempDir();
  const adminKey = overrides.auth === 'off' ? undefined : (overrides.adminKey ?? adminKeyFor({ ...overrides, dataDir }));
  const server = await startServer(
    { host: '127.0.0.1', port: 0, ...overrides, ...(adminKey ? { adminKey } : {}), dataDir },
    { logger: options.logger ?? false, env: options.env ?? {}, pipelines: options.pipelines },
  );
  return Object.assign(server, {
    api: new Api(server.url, adminKey),
    adminKey,
    dataDir,
    async stop(options: { keepData?: boolean } = {}) {
      await server.close();
      if (!options.keepData) rmSync(dataDir, { recursive: true, force: true });
    },
  });
}

/**
 * The stores the HTTP tests run on, by driver: SQLite in the server's data folder, PostgreSQL in a
 * fresh schema of its own (`uniqueSchema(prefix)`) at each call. Pass one to startTestServer, stop
 * with stopAndDrop (or use withServer), which drops the schema.
 */
export const drivers: Record<'sqlite' | 'postgres', (prefix?: string) => Partial<FleetdConfig>> = {
  sqlite: () => ({}),
  postgres: (prefix = 'fleetd_test') => ({ databaseUrl: TEST_DATABASE_URL, databaseSchema: uniqueSchema(prefix) }),
};

/** Stops a test server, dropping its PostgreSQL schema first (by its own pool) unless its data is kept; stopped whatever the drop did. */
export async function stopAndDrop(server: TestServer, options: { keepData?: boolean } = {}): Promise<void> {
  try {
    if (server.driver.name === 'postgres' && !options.keepData) await (server.driver as PostgresDriver).database.dropSchema();
  } finally {
    await server.stop(options);
  }
}

/**
 * Starts a server on `config` (by startTestServer, or `start`), runs `body` on it, then stops it
 * and drops its PostgreSQL schema whatever body did.
 */
export async function withServer<S extends TestServer = TestServer>(
  config: Partial<FleetdConfig>,
  body: (server: S) => Promise<void>,
  start: (config: Partial<FleetdConfig>) => Promise<S> = startTestServer as (config: Partial<FleetdConfig>) => Promise<S>,
): Promise<void> {
  const server = await start(config);
  try {
    await body(server);
  } finally {
    await stopAndDrop(server);
  }
}

/** Something being started, and how to stop it once it has. */
export interface Starting<T> {
  start: Promise<T>;
  stop: (started: T) => Promise<unknown>;
}

/**
 * Two things started at once, as Promise.all would start them; but when one fails, the other is
 * stopped (once started) before the error is thrown. With Promise.all the one that did start would
 * be left running, known to no `after` or `finally`, and keep the test file's process from exiting.
 */
export async function startTogether<A, B>(a: Starting<A>, b: Starting<B>): Promise<[A, B]> {
  const [ra, rb] = await Promise.allSettled([a.start, b.start]);
  if (ra.status === 'fulfilled' && rb.status === 'fulfilled') return [ra.value, rb.value];
  if (ra.status === 'fulfilled') await a.stop(ra.value);
  if (rb.status === 'fulfilled') await b.stop(rb.value);
  throw ra.status === 'rejected' ? ra.reason : (rb as PromiseRejectedResult).reason;
}

/** Resolves when `check` returns true, polling the public API; fails after timeoutMs. */
export async function eventually(check: () => Promise<boolean> | boolean, timeoutMs = 5_000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Resolves with the next event of that name (matching `where`) the server's bus publishes. */
export function nextEvent<K extends keyof import('../src/bus/bus.js').FleetEvents>(
  server: FleetServer,
  name: K,
  where: (e: import('../src/bus/bus.js').FleetEvents[K]) => boolean = () => true,
  timeoutMs = 5_000,
): Promise<import('../src/bus/bus.js').FleetEvents[K]> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no ${name} event within ${timeoutMs} ms`));
    }, timeoutMs);
    const off = server.fleet.bus.subscribe(name, (e) => {
      if (!where(e)) return;
      clearTimeout(timer);
      off();
      resolve(e);
    });
  });
}

/**
 * `promise`, or an error naming `what` once `timeoutMs` has passed. A test that waits for something
 * without a bound runs into its own timeout instead, and node:test then drops it without running its
 * `finally`: whatever the test started is left running.
 */
export function within<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${timeoutMs} ms`)), timeoutMs);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

/**
 * The CLI as `npm start` runs it: compiled, from dist/ (`npm test` builds first). Process tests use
 * it so that they start in a fraction of a second and test what ships.
 */
export const fleetdBin = join(import.meta.dirname, '..', 'dist', 'cli', 'main.js');

/**
 * Starts `fleetd start` in its own process on a port the OS picks, and resolves once it listens.
 * Its admin key is env.FLEETD_ADMIN_KEY, else the one of its store (its data folder, or database and schema).
 */
export async function startFleetdProcess(
  dataDir: string,
  env: Record<string, string> = {},
  options: { stderr?: 'inherit' | 'pipe' } = {},
): Promise<{ child: ChildProcess; api: Api; port: number; adminKey: string }> {
  const adminKey =
    env.FLEETD_ADMIN_KEY ?? adminKeyFor({ dataDir, databaseUrl: env.FLEETD_DATABASE_URL, databaseSchema: env.FLEETD_DATABASE_SCHEMA });
  const child = spawn(process.execPath, [fleetdBin, 'start', '--port', '0', '--host', '127.0.0.1', '--data-dir', dataDir], {
    env: { ...process.env, FLEETD_LOG_LEVEL: 'info', ...env, FLEETD_ADMIN_KEY: adminKey },
    stdio: ['ignore', 'pipe', options.stderr ?? 'inherit'],
  });
  const url = await listeningUrl(child);
  return { child, api: new Api(url, adminKey), port: Number(new URL(url).port), adminKey };
}

/**
 * Reads a server's JSON log lines until one with `message` says where it listens (its `url`). The
 * bound is generous: a start that takes a second on a quiet machine takes tens under a full suite.
 * A process that does not listen in time is killed, since its caller has nothing to stop yet: left
 * running, it would keep the test's process, and so the suite, from ending.
 */
export function listeningUrl(child: ChildProcess, message = 'fleetd is listening', timeoutMs = 60_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let buffered = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      fail(new Error(`fleetd did not start listening within ${timeoutMs} ms`));
    }, timeoutMs);
    const onExit = (code: number | null) => fail(new Error(`fleetd exited with ${code} before listening`));
    const onData = (chunk: Buffer) => {
      buffered += chunk.toString();
      let newline: number;
      while ((newline = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        try {
          const entry = JSON.parse(line);
          if (entry.msg === message) {
            cleanup();
            // Keep draining the pipe so that a chatty server never blocks on a full buffer.
            child.stdout!.resume();
            resolve(entry.url);
          }
        } catch {
          // not a JSON log line
        }
      }
    };
    const cleanup = () => {
      clearTimeout(timer);
      child.off('exit', onExit);
      child.stdout!.off('data', onData);
    };
    const fail = (err: Error) => {
      cleanup();
      reject(err);
    };
    child.once('exit', onExit);
    child.stdout!.on('data', onData);
  });
}

export async function kill9(child: ChildProcess): Promise<void> {
  // A process killed by a signal has no exit code, only a signal code.
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await exited;
}
