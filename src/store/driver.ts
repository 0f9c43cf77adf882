import type { CaseStore } from './case-store.js';
import type { PipelineStore } from './pipeline-store.js';
import type { Store } from './store.js';

/**
 * An open store driver: everything the server needs from storage, chosen once at start-up by
 * `openDriver(config)`. The queue (`store`), pipeline runs and cases share one database and one
 * connection (SQLite) or pool (PostgreSQL).
 *
 * Abilities are fields, never `instanceof`: code and tests ask `supportsListen`, not which driver.
 */
export interface Driver {
  readonly name: string;
  /** True when wake-ups from other processes sharing the store arrive by themselves (LISTEN/NOTIFY); `listen` is then present. */
  readonly supportsListen: boolean;
  readonly store: Store;
  readonly pipelineStore: PipelineStore;
  readonly caseStore: CaseStore;
  /**
   * The name this process holds pipeline runs under. Unique per node where nodes share the store;
   * the data folder's path on SQLite, which one process uses at a time, so that after a crash the
   * next start takes its runs back at once.
   */
  readonly runOwner: string;
  /** Brings the schema up to date; safe to run from several nodes at once. */
  migrate(): Promise<void>;
  /**
   * With supportsListen: calls `onAvailable` when another process sharing the store makes tasks
   * claimable (counts by requirement key), so that long-polls on this node wake up, and every
   * `recheckMs` (0: never) with whatever is queued. Returns the function that stops listening.
   */
  listen?(onAvailable: (byRequirement: Record<string, number>) => void, options?: { recheckMs?: number }): Promise<() => Promise<void>>;
  /** Commits what is pending and closes the connection or pool. */
  close(): Promise<void>;
}

/** The settings a driver is opened with: the configuration's storage fields. */
export interface DriverConfig {
  /** Empty: the embedded SQLite driver in dataDir. Otherwise postgres://user@host:port/database. */
  databaseUrl: string;
  /** PostgreSQL schema holding fleetd's tables. */
  databaseSchema: string;
  /** Most PostgreSQL connections in the pool. */
  databasePoolSize: number;
  /** How long a query waits for a free PostgreSQL connection, in ms. */
  databasePoolTimeoutMs: number;
  /** Folder of fleetd.db for SQLite; `:memory:` keeps everything in memory (tests only). */
  dataDir: string;
  sqliteSynchronous: 'NORMAL' | 'FULL';
  /** Where SQLite's WAL is checkpointed (see SqliteOptions.checkpoints). */
  sqliteCheckpoints?: 'thread' | 'commit';
  /** Most MiB of database pages SQLite keeps in memory. */
  sqliteCacheMb?: number;
}
