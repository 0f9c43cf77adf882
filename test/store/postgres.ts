import { randomBytes } from 'node:crypto';
import { PostgresStore, type PostgresStoreOptions } from '../../src/store/postgres/postgres-store.js';

/** The database the PostgreSQL tests use; .ci/run creates it. */
export const TEST_DATABASE_URL = process.env.FLEETD_TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

/** A schema name no other test run uses, so that test files running in parallel never collide. */
export function uniqueSchema(prefix = 'fleetd_test'): string {
  return `${prefix}_${randomBytes(6).toString('hex')}`;
}

/** A migrated store in a schema of its own; destroy() drops the schema. */
export async function freshPostgresStore(options: Partial<PostgresStoreOptions> = {}): Promise<{ store: PostgresStore; destroy(): Promise<void> }> {
  const store = new PostgresStore({ url: TEST_DATABASE_URL, schema: uniqueSchema(), poolSize: 8, ...options });
  await store.migrate();
  return {
    store,
    async destroy() {
      await store.dropSchema();
      await store.close();
    },
  };
}
