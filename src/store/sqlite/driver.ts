import { resolve } from 'node:path';
import type { Driver } from '../driver.js';
import type { Store } from '../store.js';
import { sqliteActivity } from './activity.js';
import { sqliteBulk } from './bulk.js';
import { sqliteAgents } from './agents.js';
import { sqliteAudit } from './audit.js';
import { SqliteCases } from './cases.js';
import { SqliteDatabase, type SqliteOptions } from './database.js';
import { sqliteKeys } from './keys.js';
import { sqliteLocks } from './locks.js';
import { SqliteRuns } from './runs.js';
import { sqliteSchedules } from './schedules.js';
import { sqliteTasks } from './tasks.js';
import { sqliteTypes } from './types.js';

/** The SQLite driver with its database handle, for tests that reach below the contract (disk full). */
export interface SqliteDriver extends Driver {
  readonly database: SqliteDatabase;
}

/**
 * The embedded default driver: one better-sqlite3 connection (see database.ts) that every area
 * shares. Its migrations run on opening; `migrate()` has nothing left to do.
 */
export function openSqlite(options: SqliteOptions): SqliteDriver {
  const database = new SqliteDatabase(options);
  const types = sqliteTypes(database);
  const locks = sqliteLocks(database);
  const tasks = sqliteTasks(database, types.admission, locks.acquireIn);
  const store: Store = {
    driver: 'sqlite',
    writesInStartOrder: true,
    async ping() {
      database.statement('SELECT 1').get();
    },
    commitStats: () => ({ commits: database.groupCommit.groups, writes: database.groupCommit.writes, commitSeconds: database.groupCommit.commitMs / 1000, checkpoints: database.checkpointer?.checkpoints ?? 0 }),
    ...sqliteAgents(database, { endLeasesOf: tasks.endLeasesOf, dropLocksOf: locks.dropLocksOf }),
    ...tasks.store,
    ...sqliteBulk(database, tasks.settleDependents),
    ...locks.store,
    ...sqliteKeys(database),
    ...sqliteActivity(database),
    ...sqliteSchedules(database),
    ...sqliteAudit(database),
    ...types.store,
  };
  return {
    name: 'sqlite',
    supportsListen: false,
    database,
    store,
    pipelineStore: new SqliteRuns(database),
    caseStore: new SqliteCases(database),
    // One process at a time uses a SQLite file: after a crash, its next start takes its runs back at once.
    runOwner: `sqlite:${options.dataDir === ':memory:' ? ':memory:' : resolve(options.dataDir)}`,
    async migrate() {},
    async close() {
      database.close();
    },
  };
}
