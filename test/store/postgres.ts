import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { openPostgres, type PostgresDriver } from '../../src/store/postgres/driver.js';
import type { PostgresOptions } from '../../src/store/postgres/database.js';

/** The database the PostgreSQL tests use; .ci/run creates it. */
export const TEST_DATABASE_URL = process.env.FLEETD_TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

/** A schema name no other test run uses, so that test files running in parallel never collide. */
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
