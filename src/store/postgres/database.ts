import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { FleetError } from '../../domain/errors.js';
import type { Page } from '../../domain/types.js';
import { keysetPage, type KeysetQuery } from '../keyset.js';
import type { PoolStats } from '../store.js';

export interface PostgresOptions {
  /** postgres://user@host:port/database */
  url: string;
  /** Schema holding fleetd's tables; created if missing. Defaults to public. */
  schema?: string;
  /** Most connections in the pool. Defaults to 10. */
  poolSize?: number;
  /** How long a query waits for a free connection before failing with FLEETD_ERR_STORE_UNAVAILABLE (503), in ms. Defaults to 5000. */
  poolTimeoutMs?: number;
}

const INT8_OID = 20;
/** Times and ids are BIGINT; as epoch milliseconds and row ids they stay far inside Number's exact range. */
const types = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === INT8_OID ? (value: string) => Number(value) : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
};

/**
 * The database went away under a query (connection lost, server shutting down): the request gets
 * a 503, like an exhausted pool, rather than a 500.
 */
function unavailable(err: unknown): unknown {
  if (err instanceof FleetError) return err;
  const { code, message } = err as { code?: string; message?: string };
  const lost = (code ?? '').startsWith('08') || (code ?? '').startsWith('57P') || code === 'ECONNRESET' || /Connection terminated/i.test(message ?? '');
  return lost ? new FleetError('FLEETD_ERR_STORE_UNAVAILABLE', `the database connection was lost: ${message}`) : err;
}

/** Errors worth running a transaction again for: deadlock, serialization failure. */
const RETRYABLE = new Set(['40P01', '40001']);
export const UNIQUE_VIOLATION = '23505';

/** A named statement: each connection parses and plans it once, then only binds and executes it. */
export interface Prepared {
  name: string;
  text: string;
}

/**
 * The statements every task goes through, prepared once per connection. (A node that runs while
 * another migrates the schema under it would find these plans invalid; migrations are for restarts.)
 */
export const prepared = (name: string, text: string): Prepared => ({ name: `fleetd_${name}`, text });

export type Query = <R extends pg.QueryResultRow>(text: string | Prepared, values?: unknown[]) => Promise<R[]>;

const toQueryConfig = (text: string | Prepared, values: unknown[]) => (typeof text === 'string' ? { text, values } : { ...text, values });

/**
 * The connection pool every area of the PostgreSQL driver shares (and the LISTEN connection for
 * wake-ups): a bounded `pg` pool, one statement or one short transaction per write. Claims and
 * maintenance take rows with FOR UPDATE SKIP LOCKED, so any number of nodes can share the
 * database. Wake-ups reach other nodes through LISTEN/NOTIFY, sent by triggers at commit (see
 * migrations.ts).
 */
export class PostgresDatabase {
  readonly schema: string;
  /** Sent as application_name on every connection, so that this node recognises its own notifications. */
  readonly nodeId = `fleetd-${randomUUID()}`;
  private readonly pool: pg.Pool;
  private readonly poolSize: number;
  private listener: pg.Client | undefined;
  private closed = false;

  constructor(private readonly options: PostgresOptions) {
    this.schema = options.schema ?? 'public';
    if (!/^[a-z_][a-z0-9_]{0,62}$/.test(this.schema)) throw new Error(`invalid schema name ${this.schema}`);
    this.poolSize = options.poolSize ?? 10;
    this.pool = new pg.Pool({
      connectionString: options.url,
      max: this.poolSize,
      connectionTimeoutMillis: options.poolTimeoutMs ?? 5_000,
      idleTimeoutMillis: 30_000,
      application_name: this.nodeId,
      types,
    });
    // Set on each new connection before its first query (pg runs a client's queries in order). Not
    // through the connection's `options`, which an `?options=` in the URL would silently replace.
    this.pool.on('connect', (client) => void client.query(`SET search_path TO ${this.schema}`).catch(() => {}));
    // An idle connection that breaks (database restart) is dropped by the pool; the next query
    // opens a new one. Without a listener the error would crash the process.
    this.pool.on('error', () => {});
  }

  poolStats(): PoolStats {
    return {
      size: this.poolSize,
      total: this.pool.totalCount,
      idle: this.pool.idleCount,
      inUse: this.pool.totalCount - this.pool.idleCount,
      waiting: this.pool.waitingCount,
    };
  }

  /** A connection from the pool, or a clear 503 when none frees up in time or the database is down. */
  private async connect(): Promise<pg.PoolClient> {
    try {
      return await this.pool.connect();
    } catch (err) {
      const message = (err as Error).message;
      const reason = /timeout/i.test(message)
        ? `no database connection became free within ${this.options.poolTimeoutMs ?? 5_000} ms`
        : `the database is not reachable: ${message}`;
      throw new FleetError('FLEETD_ERR_STORE_UNAVAILABLE', reason, { pool: this.poolStats() });
    }
  }

  /** One statement on a pooled connection. */
  async query<R extends pg.QueryResultRow>(text: string | Prepared, values: unknown[] = []): Promise<R[]> {
    const client = await this.connect();
    try {
      return (await client.query<R>(toQueryConfig(text, values))).rows;
    } catch (err) {
      throw unavailable(err);
    } finally {
      client.release();
    }
  }

  /**
   * Runs `work` in one transaction, again from the start on a deadlock or serialization failure
   * (or an error code in `retryOn`); so the rules a driver calls inside `work` must be pure.
   */
  async transaction<T>(work: (q: Query) => Promise<T>, retryOn: string[] = []): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      const client = await this.connect();
      try {
        await client.query('BEGIN');
        const result = await work(async (text, values = []) => (await client.query(toQueryConfig(text, values))).rows);
        await client.query('COMMIT');
        return result;
      } catch (err) {
        await client.query('ROLLBACK').catch(() => {});
        const code = (err as { code?: string }).code ?? '';
        if (attempt < 5 && (RETRYABLE.has(code) || retryOn.includes(code))) continue;
        throw unavailable(err);
      } finally {
        client.release();
      }
    }
  }

  /**
   * Runs `work` holding the session advisory lock `name` on a connection of its own (the work's
   * statements use other connections), so that it takes turns with every node sharing the database.
   */
  async withLock<T>(name: string, work: () => Promise<T>): Promise<T> {
    const client = await this.connect();
    try {
      await client.query('SELECT pg_advisory_lock(hashtext($1))', [name]);
      try {
        return await work();
      } finally {
        await client.query('SELECT pg_advisory_unlock(hashtext($1))', [name]);
      }
    } catch (err) {
      throw unavailable(err);
    } finally {
      client.release();
    }
  }

  /**
   * Calls `onAvailable` when another node (or this node's maintenance on another connection) makes
   * tasks claimable, with their counts by requirement key. Uses one dedicated connection outside
   * the pool; it reconnects if the connection drops.
   */
  async listen(onAvailable: (byRequirement: Record<string, number>) => void): Promise<() => Promise<void>> {
    const connectListener = async (reconnect = false): Promise<void> => {
      const client = new pg.Client({ connectionString: this.options.url, application_name: `${this.nodeId}-listen`, types });
      client.on('notification', (msg) => {
        if (!msg.payload) return;
        const { schema, node, byRequirement } = JSON.parse(msg.payload) as {
          schema: string;
          node: string;
          byRequirement: Record<string, number>;
        };
        if (schema === this.schema && node !== this.nodeId) onAvailable(byRequirement);
      });
      client.on('error', () => {
        client.end().catch(() => {});
        if (this.listener === client && !this.closed) {
          this.listener = undefined;
          const retry = () => void connectListener(true).catch(() => setTimeout(retry, 1_000).unref());
          setTimeout(retry, 500).unref();
        }
      });
      try {
        await client.connect();
        await client.query('LISTEN fleetd_tasks_available');
      } catch (err) {
        await client.end().catch(() => {});
        throw err;
      }
      this.listener = client;
      if (reconnect) {
        // Notifications sent while the listener was away are lost: wake for whatever is queued now.
        const rows = await this.query<{ req_key: string; n: number }>(
          "SELECT req_key, sum(n)::bigint AS n FROM task_counts WHERE status = 'queued' GROUP BY req_key HAVING sum(n) > 0",
        );
        if (rows.length > 0) onAvailable(Object.fromEntries(rows.map((r) => [r.req_key, r.n])));
      }
    };
    await connectListener();
    return async () => {
      const client = this.listener;
      this.listener = undefined;
      await client?.end();
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.listener?.end().catch(() => {});
    this.listener = undefined;
    await this.pool.end();
  }

  /** One page of a list (see keyset.ts). */
  page<R extends pg.QueryResultRow>(q: KeysetQuery<R>): Promise<Page<R>> {
    return keysetPage(q, (n) => `$${n}`, (text, values) => this.query<R>(text, values));
  }

  /** Drops the schema and everything in it. For tests that each use a schema of their own. */
  async dropSchema(): Promise<void> {
    await this.query(`DROP SCHEMA IF EXISTS ${this.schema} CASCADE`);
  }
}
