import { existsSync, renameSync, rmSync, statSync } from 'node:fs';
import { dirname, join, resolve as resolvePath } from 'node:path';
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import { ConfigError, resolveConfig, type FleetdConfig } from '../config.js';
import { prepareDataDir, StartupError } from '../server/startup.js';

export const backupUsage = `Usage:
  npx fleetd backup --to FILE [--data-dir DIR] [--config FILE]
      A consistent copy of the SQLite store, taken while the server runs (SQLite's online backup
      API, in one read transaction: writes go on meanwhile). FILE must not exist yet.
  npx fleetd restore FILE [--data-dir DIR] [--config FILE]
      Checks FILE, then makes it the store of DIR. The server must be stopped; a store already
      there is kept beside it as fleetd.db.replaced-<time>.
For PostgreSQL, use pg_dump and pg_restore.`;

/** The whole database in one backup step: one read transaction, so a concurrent writer never restarts the copy. */
const ALL_PAGES = 0x7fffffff;

function parse(argv: string[]) {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      to: { type: 'string' },
      'data-dir': { type: 'string' },
      config: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    allowPositionals: true,
    strict: true,
  });
  const overrides: Partial<FleetdConfig> = values['data-dir'] === undefined ? {} : { dataDir: values['data-dir'] };
  const env = values.config === undefined ? process.env : { ...process.env, FLEETD_CONFIG: values.config };
  return { values, positionals, config: () => sqliteConfig(resolveConfig(overrides, env)) };
}

function sqliteConfig(config: Readonly<FleetdConfig>): Readonly<FleetdConfig> {
  if (config.databaseUrl !== '') {
    throw new StartupError('backup and restore copy the embedded SQLite store, and FLEETD_DATABASE_URL names PostgreSQL', 'use pg_dump and pg_restore for PostgreSQL');
  }
  return config;
}

const storeFile = (config: Readonly<FleetdConfig>) => join(resolvePath(config.dataDir), 'fleetd.db');

/** Opens a database file fleetd made, checks it whole, and says what it holds. */
function verify(file: string): { tasks: number; agents: number } {
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    const problems = db.pragma('integrity_check', { simple: false }) as { integrity_check: string }[];
    if (problems.length !== 1 || problems[0].integrity_check !== 'ok') {
      throw new StartupError(`${file} fails SQLite's integrity check: ${problems.slice(0, 3).map((p) => p.integrity_check).join('; ')}`, 'use another backup');
    }
    if (db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'").get() === undefined) {
      throw new StartupError(`${file} is an SQLite database but not a fleetd store`, 'give a file `npx fleetd backup` wrote');
    }
    const count = (table: string) => db.prepare(`SELECT count(*) FROM ${table}`).pluck().get() as number;
    return { tasks: count('tasks'), agents: count('agents') };
  } catch (err) {
    if ((err as { code?: string }).code === 'SQLITE_NOTADB') throw new StartupError(`${file} is not an SQLite database`, 'give a file `npx fleetd backup` wrote');
    throw err;
  } finally {
    db.close();
  }
}

/** `fleetd backup --to FILE`: an online backup of the SQLite store beside the running server. */
export async function runBackup(argv: string[]): Promise<void> {
  const { values, config: resolve } = parse(argv);
  if (values.help) {
    process.stdout.write(`${backupUsage}\n`);
    return;
  }
  if (values.to === undefined) throw new ConfigError('--to', 'give the file to write the backup to: npx fleetd backup --to FILE');
  const config = resolve();
  const source = storeFile(config);
  if (!existsSync(source)) {
    throw new StartupError(`there is no fleetd store in ${resolvePath(config.dataDir)} (no fleetd.db)`, 'name the store to back up with --data-dir DIR (or FLEETD_DATA_DIR)');
  }
  const target = resolvePath(values.to);
  if (existsSync(target)) throw new StartupError(`${target} exists already`, 'give a new file: a backup never overwrites one');
  if (!existsSync(dirname(target))) throw new StartupError(`the folder of ${target} does not exist`, 'create it, or give a file in a folder that exists');
  // Written beside the target and renamed when whole: a FILE that exists is a complete backup.
  const partial = `${target}.partial`;
  rmSync(partial, { force: true });
  const db = new Database(source, { fileMustExist: true });
  try {
    db.pragma('busy_timeout = 5000');
    await db.backup(partial, { progress: () => ALL_PAGES });
  } catch (err) {
    rmSync(partial, { force: true });
    throw err;
  } finally {
    db.close();
  }
  // The copy carries the store's WAL mode; a backup is one self-contained file.
  const copy = new Database(partial, { fileMustExist: true });
  copy.pragma('journal_mode = DELETE');
  copy.close();
  const held = verify(partial);
  renameSync(partial, target);
  process.stdout.write(`backed up ${source} to ${target}: ${held.tasks} tasks, ${held.agents} agents, ${statSync(target).size} bytes, integrity ok\n`);
}

/**
 * Takes the store of a data directory for this process alone, or says it is in use: a running
 * server holds its connection open, and restoring under it would pull the data from under its counters.
 */
export function takeStoreAlone(file: string): void {
  const db = new Database(file, { fileMustExist: true });
  try {
    db.pragma('busy_timeout = 0');
    db.pragma('locking_mode = EXCLUSIVE');
    db.exec('BEGIN EXCLUSIVE');
    db.exec('COMMIT');
    // Folds the WAL into the file, so that the file alone is the whole store when it is set aside.
    db.pragma('wal_checkpoint(TRUNCATE)');
  } catch (err) {
    if ((err as { code?: string }).code === 'SQLITE_BUSY') {
      throw new StartupError(`the store ${file} is in use, by a running fleetd most likely`, 'stop the server, then restore');
    }
    throw err;
  } finally {
    db.close();
  }
}

/** `fleetd restore FILE`: makes a backup the store of a data directory, the server stopped. */
export async function runRestore(argv: string[]): Promise<void> {
  const { values, positionals, config: resolve } = parse(argv);
  if (values.help) {
    process.stdout.write(`${backupUsage}\n`);
    return;
  }
  if (positionals.length !== 1) throw new ConfigError('restore', 'give one backup file: npx fleetd restore FILE');
  const config = resolve();
  const backup = resolvePath(positionals[0]);
  if (!existsSync(backup)) throw new StartupError(`the backup ${backup} does not exist`, 'give the file `npx fleetd backup --to FILE` wrote');
  const held = verify(backup);
  prepareDataDir(config.dataDir);
  const target = storeFile(config);
  let setAside: string | undefined;
  if (existsSync(target)) {
    takeStoreAlone(target);
    setAside = `${target}.replaced-${new Date().toISOString().replaceAll(':', '-')}`;
  }
  const incoming = `${target}.restoring`;
  rmSync(incoming, { force: true });
  const source = new Database(backup, { readonly: true, fileMustExist: true });
  try {
    await source.backup(incoming, { progress: () => ALL_PAGES });
  } catch (err) {
    rmSync(incoming, { force: true });
    throw err;
  } finally {
    source.close();
  }
  if (setAside) {
    renameSync(target, setAside);
    for (const suffix of ['-wal', '-shm']) rmSync(`${target}${suffix}`, { force: true });
  }
  renameSync(incoming, target);
  process.stdout.write(
    `restored ${backup} to ${target}: ${held.tasks} tasks, ${held.agents} agents, integrity ok` +
      `${setAside ? `; the store it replaced is kept as ${setAside}` : ''}\n`,
  );
}
