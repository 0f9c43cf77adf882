import pg from 'pg';
import { unreported, type DependencyReporter } from '../../domain/dependencies.js';
import { dependencyUnavailable, FleetError } from '../../domain/errors.js';
import type { PoolStats } from '../store.js';

export interface PostgresConnectionOptions {
  url: string;
  /** Set as the search_path of every pooled connection. */
  schema: string;
  poolSize: number;
  /** How long a query waits for a free pooled connection, in ms. */
  poolTimeoutMs: number;
  /** Sent as application_name; the LISTEN and probe connections add a suffix. */
  applicationName: string;
  types: pg.CustomTypesConfig;
  /** Told when the pool and the LISTEN connection go down and come back. */
  health?: { pool: DependencyReporter; listen: DependencyReporter };
}

/** Socket errors that say the server cannot be reached or the connection broke. */
const NETWORK_ERRORS = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);
/**
 * SQLSTATEs of a connection ended by the server (57P01 terminated by an administrator or a fast
 * shutdown, 57P02 crash of another backend, 57P03 starting up or shutting down), of class 08
 * (connection exception), and 53300 (too many connections).
 */
const TOO_MANY_CONNECTIONS = '53300';
const SERVER_GONE = new Set(['57P01', '57P02', '57P03', TOO_MANY_CONNECTIONS]);

/** Whether an error says the database or the connection to it went away, rather than that a statement was wrong. */
export function isConnectionError(err: unknown): boolean {
  const { code, message } = (err ?? {}) as { code?: unknown; message?: unknown };
  const c = typeof code === 'string' ? code : '';
  return c.startsWith('08') || SERVER_GONE.has(c) || NETWORK_ERRORS.has(c) || /Connection terminated|connection ended|not queryable/i.test(String(message ?? ''));
}

/** Probes and LISTEN re-opens wait 100 ms, doubling up to 2 s, with jitter: nodes that lost the database together do not knock on it together. */
const RETRY_MIN_MS = 100;
const RETRY_MAX_MS = 2_000;
const backoff = (attempt: number) => Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** attempt) * (0.5 + Math.random() / 2);

/**
 * The pool and the LISTEN connection of a PostgresStore, and what keeps them alive through a
 * database restart, a crash and recovery, a terminated backend or a cut connection.
 *
 * The pool is in one of three states:
 *   up        queries run
 *   checking  a query met a connection error; queries still run while a probe (a fresh connection
 *             and SELECT 1) tells a lost backend from a lost server
 *   down      the probe failed: queries fail at once with FLEETD_ERR_UNAVAILABLE (503, Retry-After)
 *             instead of each waiting for a connection that cannot come; the probe runs again with
 *             backoff, and its first success brings the pool up
 * Every probe that succeeds runs the `onRecovered` callbacks, as does every re-opened LISTEN
 * connection: wake-ups may have been missed meanwhile, and the store looks for them.
 */
export class PostgresConnection {
  readonly pool: pg.Pool;
  private state: 'up' | 'checking' | 'down' = 'up';
  private reason = '';
  private probeAttempt = 0;
  private probeTimer: NodeJS.Timeout | undefined;
  private listener: pg.Client | undefined;
  private listenTimer: NodeJS.Timeout | undefined;
  private readonly recovered = new Set<() => void>();
  private readonly health: { pool: DependencyReporter; listen: DependencyReporter };
  private closed = false;

  constructor(private readonly options: PostgresConnectionOptions) {
    this.health = options.health ?? { pool: unreported, listen: unreported };
    this.pool = new pg.Pool({
      connectionString: options.url,
      max: options.poolSize,
      connectionTimeoutMillis: options.poolTimeoutMs,
      idleTimeoutMillis: 30_000,
      application_name: options.applicationName,
      // A peer that vanished without closing (a cut cable, a dead host) is found by the kernel.
      keepAlive: true,
      types: options.types,
    });
    this.pool.on('connect', (client) => {
      // The pool listens for errors only on idle clients: a backend that dies under a checked-out
      // client (between the statements of a transaction, or while an advisory lock is held) would
      // emit an 'error' nobody hears, and that ends the process.
      client.on('error', (err) => this.failed(err));
      // Before the connection's first query (pg runs a client's queries in order). Not through the
      // connection's `options`, which an `?options=` in the URL would silently replace.
      void client.query(`SET search_path TO ${options.schema}`).catch(() => {});
    });
    // An idle connection that breaks is dropped by the pool; the next query opens a new one.
    this.pool.on('error', (err) => this.failed(err));
  }

  poolStats(): PoolStats {
    return {
      size: this.options.poolSize,
      total: this.pool.totalCount,
      idle: this.pool.idleCount,
      inUse: this.pool.totalCount - this.pool.idleCount,
      waiting: this.pool.waitingCount,
    };
  }

  /** A pooled connection; a 503 at once while the database is known to be down, or when none frees up in time. */
  async connect(): Promise<pg.PoolClient> {
    if (this.state === 'down') throw this.unavailable();
    try {
      return await this.pool.connect();
    } catch (err) {
      if (isConnectionError(err)) throw this.translate(err);
      // pg-pool's own wait for a free connection; anything else (a database that does not exist, a
      // refused password) is the server's answer, passed on as it is so that it can be explained.
      if (!/timeout/i.test((err as Error).message ?? '')) throw err;
      throw new FleetError('FLEETD_ERR_STORE_UNAVAILABLE', `no database connection became free within ${this.options.poolTimeoutMs} ms`, {
        pool: this.poolStats(),
      });
    }
  }

  /**
   * A statement's error as the request should see it: a lost connection becomes a 503 (and starts a
   * probe); anything else is left as it is. `sent`: the connection was lost with a statement that
   * commits on its own on its way (not a BEGIN … COMMIT before its COMMIT), which PostgreSQL may
   * have run to its commit all the same: the 503 says its outcome is unknown.
   */
  translate(err: unknown, sent = false): unknown {
    if (err instanceof FleetError || !isConnectionError(err)) return err;
    this.failed(err);
    return dependencyUnavailable('postgres', `the database connection was lost: ${(err as Error).message}`, 1, sent);
  }

  /** Runs `callback` whenever connections may have missed notifications and now work again; returns the function that stops it. */
  onRecovered(callback: () => void): () => void {
    this.recovered.add(callback);
    return () => this.recovered.delete(callback);
  }

  /**
   * Holds a connection that LISTENs on `channel` and passes each notification's payload on; it is
   * re-opened with backoff whenever it drops. Rejects if the first one cannot be opened.
   */
  async listen(channel: string, onNotification: (payload: string) => void): Promise<() => Promise<void>> {
    const open = async (): Promise<void> => {
      const client = new pg.Client({
        connectionString: this.options.url,
        application_name: `${this.options.applicationName}-listen`,
        connectionTimeoutMillis: this.options.poolTimeoutMs,
        keepAlive: true,
        types: this.options.types,
      });
      let reason = 'the LISTEN connection ended';
      client.on('notification', (msg) => {
        if (msg.payload) onNotification(msg.payload);
      });
      client.on('error', (err) => (reason = err.message));
      client.once('end', () => {
        if (this.listener !== client || this.closed) return;
        this.listener = undefined;
        this.health.listen.down(reason);
        reopen(0);
      });
      try {
        await client.connect();
        await client.query(`LISTEN ${channel}`);
      } catch (err) {
        await client.end().catch(() => {});
        throw err;
      }
      if (this.closed) {
        await client.end().catch(() => {});
        return;
      }
      this.listener = client;
    };
    const reopen = (attempt: number) => {
      this.listenTimer = setTimeout(() => {
        open().then(
          () => {
            if (this.closed) return;
            this.health.listen.up();
            this.runRecovered();
          },
          () => {
            if (!this.closed) reopen(attempt + 1);
          },
        );
      }, backoff(attempt));
      this.listenTimer.unref();
    };
    await open();
    return async () => {
      clearTimeout(this.listenTimer);
      const client = this.listener;
      this.listener = undefined;
      await client?.end().catch(() => {});
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.probeTimer);
    clearTimeout(this.listenTimer);
    await this.listener?.end().catch(() => {});
    this.listener = undefined;
    await this.pool.end();
  }

  private unavailable(): FleetError {
    return dependencyUnavailable('postgres', `the database is unavailable: ${this.reason}`);
  }

  /** A connection error somewhere: unless a probe is under way already, start one. */
  private failed(err: unknown): void {
    if (this.closed || this.state !== 'up') return;
    this.state = 'checking';
    this.reason = (err as Error)?.message ?? String(err);
    this.probeAttempt = 0;
    this.scheduleProbe(0);
  }

  private scheduleProbe(delayMs: number): void {
    this.probeTimer = setTimeout(() => void this.probe(), delayMs);
    this.probeTimer.unref();
  }

  /** A connection of its own, not a pooled one: a pool busy to its limit says nothing about the server. */
  private async probe(): Promise<void> {
    const client = new pg.Client({
      connectionString: this.options.url,
      application_name: `${this.options.applicationName}-probe`,
      connectionTimeoutMillis: this.options.poolTimeoutMs,
    });
    client.on('error', () => {});
    let failure: Error | undefined;
    try {
      await client.connect();
      await client.query('SELECT 1');
    } catch (err) {
      // A server at max_connections is up, and the pool's own connections still work.
      if ((err as { code?: string }).code !== TOO_MANY_CONNECTIONS) failure = err as Error;
    } finally {
      void client.end().catch(() => {});
    }
    if (this.closed) return;
    if (failure) {
      this.reason = failure.message;
      if (this.state !== 'down') {
        this.state = 'down';
        this.health.pool.down(this.reason);
      }
      this.scheduleProbe(backoff(this.probeAttempt++));
      return;
    }
    if (this.state === 'down') this.health.pool.up();
    this.state = 'up';
    this.runRecovered();
  }

  private runRecovered(): void {
    for (const callback of this.recovered) callback();
  }
}
