import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { openPostgres, type PostgresDriver } from '../../src/store/postgres/driver.js';
import type { PostgresOptions } from '../../src/store/postgres/database.js';

/** The database the PostgreSQL tests use; .ci/run creates it. */
export const TEST_DATABASE_URL = process.env.FLEETD_TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

/** Drops a test's schema and everything in it, over a connection of its own. */
export async function dropSchema(schema: string): Promise<void> {
  const client = new pg.Client({ connectionString: TEST_DATABASE_URL });
  await client.connect();
  try {
    await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  } finally {
    await client.end();
  }
}

/** A schema name no other test run uses, so that test files running in parallel never collide. */
export function uniqueSchema(prefix = 'fleetd_test'): string {
  return `${prefix}_${randomBytes(6).toString('hex')}`;
}

/**
 * A migrated driver in a schema of its own; `openSibling` opens another node on the same schema
 * (closed by its opener); destroy() drops the schema.
 */
export async function freshPostgres(
  options: Partial<PostgresOptions> = {},
): Promise<{ driver: PostgresDriver; openSibling: () => PostgresDriver; destroy(): Promise<void> }> {
  const driver = openPostgres({ url: TEST_DATABASE_URL, schema: uniqueSchema(), poolSize: 8, ...options });
  await driver.migrate();
  return {
    driver,
    openSibling: () => openPostgres({ url: TEST_DATABASE_URL, schema: driver.database.schema, poolSize: 4 }),
    async destroy() {
      await driver.database.dropSchema();
      await driver.close();
    },
  };
}

/** What a schema held right after its migrations: the rows they seeded and where each sequence stood. */
interface Snapshot {
  tables: string[];
  seeded: { table: string; rows: string }[];
  sequences: { name: string; start: string; last: string | null }[];
}

const snapshots = new Map<string, Snapshot>();

async function withClient<T>(work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: TEST_DATABASE_URL });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

/**
 * Takes the snapshot resetPostgres() goes back to, of a schema just migrated: its tables (from
 * information_schema, so a new migration's tables are in it without a word here), the rows the
 * migrations seeded (as JSON) and every sequence's position.
 */
export async function snapshotPostgres(schema: string): Promise<void> {
  const snapshot = await withClient(async (client) => {
    const { rows: tables } = await client.query<{ name: string }>(
      `SELECT table_name AS name FROM information_schema.tables WHERE table_schema = $1 AND table_type = 'BASE TABLE' ORDER BY 1`,
      [schema],
    );
    const seeded: Snapshot['seeded'] = [];
    for (const { name } of tables) {
      const { rows } = await client.query<{ rows: string | null }>(`SELECT json_agg(t)::text AS rows FROM ${schema}.${name} t`);
      if (rows[0].rows !== null) seeded.push({ table: name, rows: rows[0].rows });
    }
    const { rows: sequences } = await client.query<{ name: string; start: string; last: string | null }>(
      'SELECT sequencename AS name, start_value::text AS start, last_value::text AS last FROM pg_sequences WHERE schemaname = $1',
      [schema],
    );
    return { tables: tables.map((t) => t.name), seeded, sequences };
  });
  snapshots.set(schema, snapshot);
}

/**
 * Puts a schema back as its migrations left it (see snapshotPostgres), in one transaction: every
 * table emptied, the seeded rows written back with triggers off (they were already counted where
 * triggers count), every sequence back where it stood.
 */
export async function resetPostgres(schema: string): Promise<void> {
  const snapshot = snapshots.get(schema);
  if (!snapshot) throw new Error(`no snapshot of ${schema}: call snapshotPostgres right after its migration`);
  // One round trip: DELETE rather than TRUNCATE, which costs a new file per table (about 80 ms for
  // the schema's tables against 10 ms); with triggers off, foreign keys do not order the deletes.
  await withClient(async (client) => {
    const statements = [
      'BEGIN',
      'SET LOCAL session_replication_role = replica',
      ...snapshot.tables.map((t) => `DELETE FROM ${schema}.${t}`),
      ...snapshot.seeded.map(({ table, rows }) =>
        `INSERT INTO ${schema}.${table} SELECT * FROM json_populate_recordset(NULL::${schema}.${table}, ${client.escapeLiteral(rows)}::json)`),
      ...snapshot.sequences.map(({ name, start, last }) =>
        `SELECT setval('${schema}.${name}'::regclass, ${last ?? start}, ${last !== null})`),
      'COMMIT',
    ];
    await client.query(statements.join(';\n'));
  });
}

/**
 * One schema migrated once for a whole test file, reset after each use instead of migrated again
 * (a migration from nothing costs about half a second; a reset a few milliseconds). `open()` gives
 * a driver on it whose `destroy()` closes it and resets the schema; `drop()` removes the schema, in
 * the file's `after`. Uses must not overlap: the tests of a file run one at a time.
 */
export function sharedPostgres(options: Partial<PostgresOptions> = {}): {
  open(): Promise<{ driver: PostgresDriver; openSibling: () => PostgresDriver; destroy(): Promise<void> }>;
  drop(): Promise<void>;
} {
  const schema = uniqueSchema();
  let migrated: Promise<void> | undefined;
  return {
    async open() {
      migrated ??= (async () => {
        const first = openPostgres({ url: TEST_DATABASE_URL, schema, poolSize: 2 });
        try {
          await first.migrate();
        } finally {
          await first.close();
        }
        await snapshotPostgres(schema);
      })();
      await migrated;
      const driver = openPostgres({ url: TEST_DATABASE_URL, schema, poolSize: 8, ...options });
      return {
        driver,
        openSibling: () => openPostgres({ url: TEST_DATABASE_URL, schema, poolSize: 4 }),
        async destroy() {
          await driver.close();
          await resetPostgres(schema);
        },
      };
    },
    async drop() {
      snapshots.delete(schema);
      if (migrated) await dropSchema(schema);
    },
  };
}
