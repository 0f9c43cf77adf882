import { Redis } from 'ioredis';
import pino, { type Logger } from 'pino';
import { LocalBus } from '../bus/local-bus.js';
import { resolveConfig, type FleetdConfig } from '../config.js';
import { Fleet } from '../core/fleet.js';
import { NlpPool } from '../nlp/nlp-pool.js';
import { createPipelines, type PipelineSetup, type Pipelines } from '../pipelines/pipelines.js';
import { SqliteCaseStore } from '../store/sqlite/sqlite-case-store.js';
import { SqlitePipelineStore } from '../store/sqlite/sqlite-pipeline-store.js';
import { SqliteStore } from '../store/sqlite/sqlite-store.js';
import type { Store } from '../store/store.js';
import { buildApp, type App } from './app.js';

export interface FleetServer {
  app: App;
  fleet: Fleet;
  store: Store;
  config: Readonly<FleetdConfig>;
  pipelines: Pipelines;
  /** The address it listens on, e.g. http://127.0.0.1:7070. */
  url: string;
  close(): Promise<void>;
}

export function createLogger(level: string): Logger {
  return pino({
    level,
    // Pretty in a terminal, JSON everywhere else (files, pipes, log shippers).
    ...(process.stdout.isTTY ? { transport: { target: 'pino-pretty', options: { colorize: true } } } : {}),
  });
}

/**
 * Builds the store, bus, domain and HTTP app from a configuration, starts maintenance and listens.
 * Drivers are chosen here, once; nothing below `core/` knows which.
 */
export async function startServer(
  overrides: Partial<FleetdConfig> = {},
  options: { logger?: Logger | false; env?: NodeJS.ProcessEnv; pipelines?: PipelineSetup } = {},
): Promise<FleetServer> {
  const config = resolveConfig(overrides, options.env);
  const log = options.logger === undefined ? createLogger(config.logLevel) : options.logger;
  const silent = { info() {}, warn() {}, error() {} };
  const store = new SqliteStore({ dataDir: config.dataDir, synchronous: config.sqliteSynchronous });
  const bus = new LocalBus((err, name) => (log || silent).error({ err, event: name }, 'event handler failed'));
  const fleet = new Fleet({ store, bus, config, log: log || silent });
  const nlp = new NlpPool();
  let pipelines: Pipelines;
  try {
    // A bad pipeline definition stops the start here, before anything listens.
    const pipelineStore = new SqlitePipelineStore(store.db, store.groupCommit);
    const caseStore = new SqliteCaseStore(store.db, store.groupCommit);
    pipelines = createPipelines({ fleet, store: pipelineStore, caseStore, config, log: log || silent, setup: { nlp: (operation, text, signal) => nlp.analyse(text, [], signal).then((r) => (operation === 'entities' ? r.entities : r)), ...options.pipelines }, env: options.env });
  } catch (err) {
    await store.close();
    throw err;
  }
  // fleetd's own connection for the L2 cache and rate limits, apart from any Redis bus.
  const redis = config.redisUrl ? new Redis(config.redisUrl, { lazyConnect: true, maxRetriesPerRequest: 2 }) : undefined;
  await redis?.connect();
  const app = await buildApp({ fleet, config, logger: log || false, pipelines, nlp, redis });
  fleet.start();
  let address: string;
  try {
    await pipelines.cases.start();
    await pipelines.engine.start();
    address = await app.listen({ host: config.host, port: config.port });
  } catch (err) {
    fleet.stop();
    await pipelines.close();
    await app.close();
    await nlp.close();
    redis?.disconnect();
    await store.close();
    throw err;
  }
  await app.warmCache?.();
  let closing: Promise<void> | undefined;
  return {
    app,
    fleet,
    store,
    config,
    pipelines,
    url: address.replace('0.0.0.0', '127.0.0.1').replace('[::]', '127.0.0.1'),
    close() {
      closing ??= (async () => {
        // Waiting long-polls answer first, so that closing the listener does not wait on them.
        fleet.stop();
        await pipelines.close();
        await app.close();
        await nlp.close();
        await redis?.quit();
        await bus.close();
        await store.close();
      })();
      return closing;
    },
  };
}
