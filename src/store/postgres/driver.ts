import type { Driver } from '../driver.js';
import type { Store } from '../store.js';
import { postgresActivity } from './activity.js';
import { postgresBulk } from './bulk.js';
import { postgresAgents } from './agents.js';
import { PostgresCases } from './cases.js';
import { PostgresDatabase, type PostgresOptions } from './database.js';
import { postgresKeys } from './keys.js';
import { postgresAudit } from './audit.js';
import { postgresLocks } from './locks.js';
import { migrate } from './migrations.js';
import { PostgresRuns } from './runs.js';
import { postgresSchedules } from './schedules.js';
import { postgresTasks } from './tasks.js';
import { postgresTypes } from './types.js';

/** The PostgreSQL driver with its pool, for tests that reach below the contract (a schema each, plans). */
export interface PostgresDriver extends Driver {
  readonly database: PostgresDatabase;
}

/**
 * The scale-out driver: every area on one bounded pool (see database.ts), shared by any number of
 * nodes; wake-ups between nodes by LISTEN/NOTIFY.
 */
export function openPostgres(options: PostgresOptions): PostgresDriver {
  const database = new PostgresDatabase(options);
  const types = postgresTypes(database);
  const locks = postgresLocks(database);
  const tasks = postgresTasks(database, types.admission, locks.acquireIn);
  const store: Store = {
    driver: 'postgres',
    writesInStartOrder: false,
    async ping() {
      await database.query('SELECT 1');
    },
    poolStats: () => database.poolStats(),
    ...postgresAgents(database, { endLeases: tasks.endLeases, dropLocksOf: locks.dropLocksOf }),
    ...tasks.store,
    ...postgresBulk(database, tasks.settleDependents),
    ...locks.store,
    ...postgresKeys(database),
    ...postgresActivity(database),
    ...postgresSchedules(database),
    ...postgresAudit(database),
    ...types.store,
  };
  return {
    name: 'postgres',
    supportsListen: true,
    database,
    store,
    pipelineStore: new PostgresRuns(database),
    caseStore: new PostgresCases(database),
    runOwner: database.nodeId,
    migrate: () => migrate(database),
    listen: (onAvailable, options) => database.listen(onAvailable, options),
    close: () => database.close(),
  };
}
