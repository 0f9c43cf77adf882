import type { Dependencies } from '../domain/dependencies.js';
import type { Driver, DriverConfig } from './driver.js';
import { openPostgres } from './postgres/driver.js';
import { openSqlite } from './sqlite/driver.js';

/**
 * The driver a configuration names, not yet migrated: embedded SQLite when no database URL is
 * set, PostgreSQL shared by several nodes otherwise. Chosen here, once; nothing above the store
 * knows which. `dependencies` hears when PostgreSQL's connections go down and come back.
 */
export function openDriver(config: Readonly<DriverConfig>, dependencies?: Dependencies): Driver {
  if (config.databaseUrl === '') return openSqlite({ dataDir: config.dataDir, synchronous: config.sqliteSynchronous, cacheMb: config.sqliteCacheMb, checkpoints: config.sqliteCheckpoints });
  return openPostgres({
    url: config.databaseUrl,
    schema: config.databaseSchema,
    poolSize: config.databasePoolSize,
    poolTimeoutMs: config.databasePoolTimeoutMs,
    health: dependencies && { pool: dependencies.reporter('postgres', 'pool'), listen: dependencies.reporter('postgres', 'listen') },
  });
}
