import { createHash, randomUUID } from 'node:crypto';
import pg from 'pg';
import type { DependencyReporter } from '../../domain/dependencies.js';
import { isDependencyUnavailable } from '../../domain/errors.js';
import type { Page } from '../../domain/types.js';
import { keysetPage, type KeysetQuery } from '../keyset.js';
import type { PoolStats } from '../store.js';
import { PostgresConnection } from './connection.js';

export interface PostgresOptions {
  /** postgres://user@host:port/database */
  url: string;
  /** Schema holding fleetd's tables; created if missing. Defaults to public. */
  schema?: string;
  /** Most connections in the pool. Defaults to 10. */
  poolSize?: number;
  /** How long a query waits for a free connection before failing with FLEETD_ERR_STORE_UNAVAILABLE (503), in ms. Defaults to 5000. */
  poolTimeoutMs?: number;
  /** Told when the pool and the LISTEN connection go down and come back (see connection.ts). */
  health?: { pool: DependencyReporter; listen: DependencyReporter };
}

const INT8_OID = 20;
/** Times and ids are BIGINT; as epoch milliseconds and row ids they stay far inside Number's exact range. */
const types = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === INT8_OID ? (value: string) => Number(value) : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
};

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

/** A function of the hot path's statements: the name this release calls it by, and its definition. */
export interface HotPathFunction {
  name: string;
  create: string;
}

/**
 * The hot path's functions are not migrations: `migrate` creates them on every start. Each is named
 * by its base name and a hash of its text, and this release calls it by that name. During a rolling
 * upgrade a node of another release, starting, creates its own version beside it under another
 * name: neither replaces the function the other calls (a node of the release before this one,
 * whose functions had bare names, had put its own claim back for every node, and with it lost
 * claims went unfound until their leases expired). A version no node calls any more stays in the
 * schema, a few hundred bytes, until dropped by hand (docs/store-drivers.md).
 */
export function hotPathFunction(base: string, define: (name: string) => string): HotPathFunction {
  const name = `${base}_${createHash('sha256').update(define(base)).digest('hex').slice(0, 12)}`;
  return { name, create: define(name) };
}

export type Query = <R extends pg.QueryResultRow>(text: string | Prepared, values?: unknown[]) => Promise<R[]>;

const toQueryConfig = (text: string | Prepared, values: unknown[]) => (typeof text === 'string' ? { text, values } : { ...text, values });

/** How long after a catch-up that failed for want of a pooled connection it is tried again. */
const CATCH_UP_RETRY_MS = 1_000;

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
  private readonly connection: PostgresConnection;

  constructor(options: PostgresOptions) {
    this.schema = options.schema ?? 'public';
    if (!/^[a-z_][a-z0-9_]{0,62}$/.test(this.schema)) throw new Error(`invalid schema name ${this.schema}`);
    this.connection = new PostgresConnection({
      url: options.url,
      schema: this.schema,
      poolSize: options.poolSize ?? 10,
      poolTimeoutMs: options.poolTimeoutMs ?? 5_000,
      applicationName: this.nodeId,
      types,
      health: options.health,
    });
  }

  poolStats(): PoolStats {
    return this.connection.poolStats();
  }

  /** A connection from the pool, or a clear 503 when none frees up in time or the database is down. */
  private connect(): Promise<pg.PoolClient> {
    return this.connection.connect();
  }

  /** One statement on a pooled connection. */
  async query<R extends pg.QueryResultRow>(text: string | Prepared, values: unknown[] = []): Promise<R[]> {
    const client = await this.connect();
    try {
      return (await client.query<R>(toQueryConfig(text, values))).rows;
    } catch (err) {
      throw this.connection.translate(err, true);
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
      let committing = false;
      try {
        await client.query('BEGIN');
        const result = await work(async (text, values = []) => (await client.query(toQueryConfig(text, values))).rows);
        committing = true;
        await client.query('COMMIT');
        return result;
      } catch (err) {
        await client.query('ROLLBACK').catch(() => {});
        const code = (err as { code?: string }).code ?? '';
        if (attempt < 5 && (RETRYABLE.has(code) || retryOn.includes(code))) continue;
        throw this.connection.translate(err, committing);
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
      throw this.connection.translate(err);
    } finally {
      client.release();
    }
  }

  /**
   * Calls `onAvailable` when another node (or this node's maintenance on another connection) makes
   * tasks claimable, with their counts by requirement key. Uses one dedicated connection outside
   * the pool, re-opened when it drops. Whenever connections work again after a failure,
   * notifications may have been lost meanwhile (and wake-ups spent on claims that failed): it
   * wakes for whatever is queued now.
   *
   * Every `recheckMs` it wakes one waiting claim for each requirement set with queued tasks, as
   * river's and graphile-worker's periodic fetches back up their LISTEN: a claim skips the rows
   * another transaction has locked, and when that transaction leases none of them (a claim rolled
   * back; a claim's own unleased rows are announced, see fleetd_announce_unleased), nothing is
   * notified. One a set, not one a task: tasks a policy or a pause holds back stay
   * queued, and would otherwise cost a vain claim a second for every agent waiting on them.
   */
  async listen(onAvailable: (byRequirement: Record<string, number>) => void, options: { recheckMs?: number } = {}): Promise<() => Promise<void>> {
    let stopped = false;
    const catchUp = async (most = Infinity) => {
      const rows = await this.query<{ req_key: string; n: number }>(
        "SELECT req_key, sum(n)::bigint AS n FROM task_counts WHERE status = 'queued' GROUP BY req_key HAVING sum(n) > 0",
      );
      if (rows.length > 0 && !stopped) onAvailable(Object.fromEntries(rows.map((r) => [r.req_key, Math.min(Number(r.n), most)])));
    };
    // A catch-up that loses its connection starts another probe, whose success catches up again.
    // One that fails otherwise (no pooled connection free in time, as the nodes' requests come back
    // at once) is tried again a second later: claims that failed in the outage handed their
    // wake-ups on to nobody, and this is what wakes them.
    let retry: NodeJS.Timeout | undefined;
    const catchUpAfterOutage = (): void => {
      clearTimeout(retry);
      void catchUp().catch((err: unknown) => {
        if (!stopped && !isDependencyUnavailable(err)) (retry = setTimeout(catchUpAfterOutage, CATCH_UP_RETRY_MS)).unref();
      });
    };
    const stopCatchingUp = this.connection.onRecovered(catchUpAfterOutage);
    const stopListening = await this.connection.listen('fleetd_tasks_available', (payload) => {
      const { schema, node, byRequirement } = JSON.parse(payload) as { schema: string; node: string; byRequirement: Record<string, number> };
      if (schema === this.schema && node !== this.nodeId) onAvailable(byRequirement);
    });
    // When nobody waits, a recheck costs its query alone. One at a time: while the pool is
    // saturated or a connection hangs, rechecks must not queue up for connections requests need.
    let rechecking = false;
    const recheck = options.recheckMs
      ? setInterval(() => {
          if (rechecking) return;
          rechecking = true;
          catchUp(1)
            .catch(() => {})
            .finally(() => (rechecking = false));
        }, options.recheckMs)
      : undefined;
    recheck?.unref();
    return async () => {
      stopped = true;
      clearInterval(recheck);
      clearTimeout(retry);
      stopCatchingUp();
      await stopListening();
    };
  }

  async close(): Promise<void> {
    await this.connection.close();
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
