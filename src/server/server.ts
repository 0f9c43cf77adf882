import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import pino, { type Logger } from 'pino';
import type { Bus } from '../bus/bus.js';
import { LocalBus } from '../bus/local-bus.js';
import { RedisBus } from '../bus/redis-bus.js';
import { ConfigError, redactedFields, resolveConfig, type FleetdConfig } from '../config.js';
import { redactingLogger } from './redaction.js';
import { Dependencies } from '../domain/dependencies.js';
import { Fleet } from '../core/fleet.js';
import { NlpPool } from '../nlp/nlp-pool.js';
import { createPipelines, type PipelineSetup, type Pipelines } from '../pipelines/pipelines.js';
import { connectRedis, redisSettings } from '../redis/connection.js';
import type { Driver } from '../store/driver.js';
import { openDriver } from '../store/open-driver.js';
import type { Store } from '../store/store.js';
import { startTracing, traceTasks } from '../tracing/tracing.js';
import { buildApp, type App } from './app.js';
import { explainStartupError, prepareDataDir } from './startup.js';

export interface FleetServer {
  app: App;
  fleet: Fleet;
  store: Store;
  /** The store driver the configuration chose (its abilities, and what tests reach below the contract). */
  driver: Driver;
  config: Readonly<FleetdConfig>;
  pipelines: Pipelines;
  /** The address it listens on, e.g. http://127.0.0.1:7070. */
  url: string;
  /**
   * The admin key this start made up because no key existed and none was configured: its only
   * appearance, for `fleetd start` to print once. Undefined on every later start.
   */
  firstAdminKey?: string;
  close(): Promise<void>;
}

export function createLogger(level: string): Logger {
  // Pretty in a terminal, JSON everywhere else (files, pipes, log shippers).
  if (process.stdout.isTTY) return pino({ level, transport: { target: 'pino-pretty', options: { colorize: true } } });
  const destination = pino.destination({ dest: 1 });
  // EPIPE: whatever read the log (a parent process, a pipe into a shipper) is gone. pino drops lines
  // silently from then on, so fleetd would run on as an unseen orphan; it shuts down as on SIGTERM.
  destination.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.kill(process.pid, 'SIGTERM');
  });
  return pino({ level }, destination);
}

/** The certificate and key files of FLEETD_TLS_CERT and FLEETD_TLS_KEY, read once at start; none for plain HTTP. */
function readTls(config: Readonly<FleetdConfig>): { cert: Buffer; key: Buffer } | undefined {
  if (config.tlsCert === '') return undefined;
  const read = (setting: string, path: string) => {
    try {
      return readFileSync(path);
    } catch (err) {
      throw new ConfigError(setting, `cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  };
  const tls = { cert: read('FLEETD_TLS_CERT', config.tlsCert), key: read('FLEETD_TLS_KEY', config.tlsKey) };
  try {
    createSecureContext(tls);
  } catch (err) {
    throw new ConfigError('FLEETD_TLS_CERT', `${config.tlsCert} and ${config.tlsKey} are not a PEM certificate and its private key: ${(err as Error).message}`);
  }
  return tls;
}

/** Connections the kernel queues before fleetd accepts them (capped by net.core.somaxconn). */
const LISTEN_BACKLOG = 4096;

/**
 * Builds the store, bus, domain and HTTP app from a configuration, starts maintenance and listens.
 * Drivers are chosen here, once; nothing below `core/` knows which.
 */
export async function startServer(
  overrides: Partial<FleetdConfig> = {},
  options: { logger?: Logger | false; env?: NodeJS.ProcessEnv; pipelines?: PipelineSetup } = {},
): Promise<FleetServer> {
  const config = resolveConfig(overrides, options.env);
  const given = options.logger === undefined ? createLogger(config.logLevel) : options.logger;
  // Every line fleetd logs goes through it: the configured fields never reach the log.
  const log = given && redactingLogger(given, redactedFields(config));
  const silent = { info() {}, warn() {}, error() {} };
  // What this node depends on and whether each is reachable: /readyz, /metrics and the dashboard show it.
  const dependencies = new Dependencies(log || silent);
  let driver: Driver;
  try {
    if (config.databaseUrl === '' && config.dataDir !== ':memory:') prepareDataDir(config.dataDir);
    driver = openDriver(config, dependencies);
  } catch (err) {
    throw explainStartupError(err, config, 'store');
  }
  const { store } = driver;
  const closeStores = () => driver.close();
  const onHandlerError = (err: unknown, name: string) => (log || silent).error({ err, event: name }, 'event handler failed');
  const nlp = new NlpPool();
  const redisConfig = redisSettings(config);
  let bus: Bus | undefined;
  let redis: Awaited<ReturnType<typeof connectRedis>> | undefined;
  let stopListening: (() => Promise<void>) | undefined;
  let fleet: Fleet | undefined;
  let pipelines: Pipelines | undefined;
  let app: App | undefined;
  let address: string;
  let firstAdminKey: string | undefined;
  // OpenTelemetry, when OTEL_EXPORTER_OTLP_ENDPOINT is set: loaded only then.
  const stopTracing = await startTracing(options.env);
  try {
    await driver.migrate().catch((err) => {
      throw explainStartupError(err, config, 'store');
    });
    bus = redisConfig ? await RedisBus.connect(redisConfig, onHandlerError, (role) => dependencies.reporter('redis', role)) : new LocalBus(onHandlerError);
    traceTasks(bus);
    fleet = new Fleet({ store, bus, config, log: log || silent });
    const delivery = fleet.delivery;
    // Tasks made claimable by other nodes sharing the store wake this node's long-polls and channels.
    if (driver.supportsListen && driver.listen) {
      stopListening = await driver.listen((byRequirement) => delivery.tasksAvailable(byRequirement), { recheckMs: config.claimRecheckMs });
    }
    // A bad pipeline definition stops the start here, before anything listens.
    pipelines = createPipelines({ fleet, store: driver.pipelineStore, caseStore: driver.caseStore, owner: driver.runOwner, config, log: log || silent, setup: { nlp: (operation, text, signal) => nlp.analyse(text, [], signal).then((r) => (operation === 'entities' ? r.entities : r)), ...options.pipelines }, env: options.env });
    // fleetd's own connection for the L2 cache and rate limits, apart from the Redis bus's.
    redis = redisConfig ? await connectRedis(redisConfig, 'cache', dependencies.reporter('redis', 'cache')) : undefined;
    app = await buildApp({ fleet, config, logger: log || false, pipelines, nlp, redis, dependencies, tls: readTls(config) });
    fleet.start();
    await pipelines.cases.start();
    await pipelines.engine.start();
    pipelines.cleaner.start();
    // A fleet reconnecting at once (a restart, a network blip) opens connections in bursts of
    // thousands; Node's default backlog of 511 drops the rest of a burst, and their SYNs wait seconds to retry.
    address = await app.listen({ host: config.host, port: config.port, backlog: LISTEN_BACKLOG }).catch((err) => {
      throw explainStartupError(err, config, 'listen');
    });
    // Only once it listens: a start that fails earlier (port in use) must not store a first admin
    // key that it never prints, locking the operator out of the next start.
    if (config.auth === 'on') {
      const created = await fleet.credentials.bootstrap(config.adminKey || undefined);
      if (created && config.adminKey === '') firstAdminKey = created.secret;
    } else {
      (log || silent).warn('AUTH IS OFF (--no-auth): anyone who can reach this port can read and change everything. For local experiments only.');
    }
  } catch (err) {
    fleet?.stop();
    await pipelines?.close();
    await app?.close();
    await nlp.close();
    redis?.disconnect();
    await stopListening?.().catch(() => {});
    await bus?.close();
    await closeStores();
    await stopTracing();
    throw err;
  }
  await app.warmCache?.();
  const openApp = app;
  const openBus = bus;
  const openFleet = fleet;
  const openPipelines = pipelines;
  const openRedis = redis;
  let closing: Promise<void> | undefined;
  return {
    app: openApp,
    fleet: openFleet,
    store,
    driver,
    config,
    pipelines: openPipelines,
    url: address.replace('0.0.0.0', '127.0.0.1').replace('[::]', '127.0.0.1'),
    firstAdminKey,
    close() {
      closing ??= (async () => {
        // Waiting long-polls answer first, so that closing the listener does not wait on them.
        openFleet.stop();
        await openPipelines.close();
        await openApp.close();
        // A store that is away loses at most one interval of last-seen times; the next start's grace covers them.
        await openFleet.flush().catch(() => {});
        await nlp.close();
        await openRedis?.quit();
        await stopListening?.();
        await openBus.close();
        await closeStores();
        await stopTracing();
      })();
      return closing;
    },
  };
}
