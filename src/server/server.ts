import pino, { type Logger } from 'pino';
import type { Bus } from '../bus/bus.js';
import { LocalBus } from '../bus/local-bus.js';
import { RedisBus } from '../bus/redis-bus.js';
import { resolveConfig, type FleetdConfig } from '../config.js';
import { Fleet } from '../core/fleet.js';
import { redisSettings } from '../redis/connection.js';
import { PostgresStore } from '../store/postgres/postgres-store.js';
import { SqliteStore } from '../store/sqlite/sqlite-store.js';
import type { Store } from '../store/store.js';
import { buildApp, type App } from './app.js';

export interface FleetServer {
  app: App;
  fleet: Fleet;
  store: Store;
  config: Readonly<FleetdConfig>;
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
  options: { logger?: Logger | false; env?: NodeJS.ProcessEnv } = {},
): Promise<FleetServer> {
  const config = resolveConfig(overrides, options.env);
  const log = options.logger === undefined ? createLogger(config.logLevel) : options.logger;
  const silent = { info() {}, warn() {}, error() {} };
  const store: Store =
    config.databaseUrl === ''
      ? new SqliteStore({ dataDir: config.dataDir, synchronous: config.sqliteSynchronous })
      : new PostgresStore({
          url: config.databaseUrl,
          schema: config.databaseSchema,
          poolSize: config.databasePoolSize,
          poolTimeoutMs: config.databasePoolTimeoutMs,
        });
  const onHandlerError = (err: unknown, name: string) => (log || silent).error({ err, event: name }, 'event handler failed');
  let bus: Bus | undefined;
  let stopListening: (() => Promise<void>) | undefined;
  let fleet: Fleet | undefined;
  let app: App;
  let address: string;
  try {
    await store.migrate();
    const redis = redisSettings(config);
    bus = redis ? await RedisBus.connect(redis, onHandlerError) : new LocalBus(onHandlerError);
    fleet = new Fleet({ store, bus, config, log: log || silent });
    const waiters = fleet.waiters;
    // Tasks made claimable by other nodes sharing the store wake this node's long-polls.
    if (store.supportsListen && store.listen) stopListening = await store.listen((byRequirement) => waiters.notify(byRequirement));
    app = await buildApp({ fleet, config, logger: log || false });
    fleet.start();
    address = await app.listen({ host: config.host, port: config.port });
  } catch (err) {
    fleet?.stop();
    await stopListening?.().catch(() => {});
    await bus?.close();
    await store.close();
    throw err;
  }
  const openBus = bus;
  const openFleet = fleet;
  let closing: Promise<void> | undefined;
  return {
    app,
    fleet: openFleet,
    store,
    config,
    url: address.replace('0.0.0.0', '127.0.0.1').replace('[::]', '127.0.0.1'),
    close() {
      closing ??= (async () => {
        // Waiting long-polls answer first, so that closing the listener does not wait on them.
        openFleet.stop();
        await app.close();
        await stopListening?.();
        await openBus.close();
        await store.close();
      })();
      return closing;
    },
  };
}
