import { accessSync, constants, existsSync, mkdirSync, statSync } from 'node:fs';
import { dirname, join, resolve as resolvePath } from 'node:path';
import pg from 'pg';
import { maskedConfig, type FleetdConfig } from '../config.js';
import type { Driver } from '../store/driver.js';
import { openDriver } from '../store/open-driver.js';
import { NewerSchemaError } from '../store/sqlite/migrations.js';

/**
 * A start-up failure the operator can fix: it names the problem, the value at fault and the fix, so
 * that the CLI prints it as one line instead of a stack.
 */
export class StartupError extends Error {
  constructor(problem: string, readonly fix: string, options?: { cause?: unknown }) {
    super(`${problem} — ${fix}`, options);
    this.name = 'StartupError';
  }
}

const dataDirFix = 'give --data-dir (or FLEETD_DATA_DIR) a folder fleetd may create and write';

/**
 * Makes the SQLite data folder, one missing level at a time, and checks that fleetd may write in it.
 * Node's recursive mkdir retries forever where a parent exists but refuses children (/proc): here
 * every refusal is an error that names the folder.
 */
export function prepareDataDir(dataDir: string): void {
  const dir = resolvePath(dataDir);
  const missing: string[] = [];
  let existing = dir;
  while (!existsSync(existing)) {
    missing.unshift(existing);
    existing = dirname(existing);
  }
  if (!statSync(existing).isDirectory()) {
    throw new StartupError(`the data directory ${dir} cannot be created: ${existing} is a file, not a folder`, dataDirFix);
  }
  for (const level of missing) {
    try {
      mkdirSync(level);
    } catch (err) {
      // ENOENT although the parent exists: a file system that takes no new folders (/proc, /sys).
      const why = (err as { code?: string }).code === 'ENOENT' ? `${dirname(level)} takes no new folders` : `${reason(err)} at ${level}`;
      throw new StartupError(`the data directory ${dir} cannot be created (${why})`, dataDirFix, { cause: err });
    }
  }
  try {
    accessSync(dir, constants.W_OK | constants.X_OK);
  } catch (err) {
    throw new StartupError(`the data directory ${dir} is not writable (${reason(err)})`, dataDirFix, { cause: err });
  }
}

function reason(err: unknown): string {
  const { code, message } = err as { code?: string; message?: string };
  const known: Record<string, string> = {
    EACCES: 'permission denied',
    EPERM: 'operation not permitted',
    EROFS: 'read-only file system',
    ENOENT: 'no such file or directory',
    ENOTDIR: 'not a directory',
    ENOSPC: 'no space left on device',
  };
  return (code && known[code]) ?? message ?? String(err);
}

/**
 * The operator's version of an error met while opening the store or listening, or the error itself
 * when it is not one fleetd can explain (a bug keeps its stack).
 */
export function explainStartupError(err: unknown, config: Readonly<FleetdConfig>, phase: 'store' | 'listen'): unknown {
  if (err instanceof StartupError) return err;
  const { code, message } = err as { code?: string; message?: string };
  if (phase === 'listen') {
    const where = `port ${config.port} on ${config.host}`;
    if (code === 'EADDRINUSE') {
      return new StartupError(`${where} is already in use by another program`, 'stop that program, or start fleetd on another port: npx fleetd start --port N (or FLEETD_PORT)', { cause: err });
    }
    if (code === 'EACCES') {
      return new StartupError(`${where} needs privileges fleetd does not have`, 'use a port above 1023: npx fleetd start --port N (or FLEETD_PORT)', { cause: err });
    }
    if (code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND') {
      return new StartupError(`cannot listen on ${config.host}: it is not an address of this machine`, 'give --host (or FLEETD_HOST) one of its addresses, or 0.0.0.0 for all', { cause: err });
    }
    return err;
  }
  if (config.databaseUrl !== '') {
    const url = maskedConfig(config).databaseUrl;
    return new StartupError(
      `cannot use the PostgreSQL database ${url}: ${message ?? err}`,
      'check FLEETD_DATABASE_URL (user, password, host, port, database) and that PostgreSQL runs and accepts connections from here',
      { cause: err },
    );
  }
  const store = `the SQLite store ${join(resolvePath(config.dataDir), 'fleetd.db')}`;
  if (err instanceof NewerSchemaError) {
    return new StartupError(`cannot open ${store}: ${err.message}`, 'run the fleetd release that wrote it, or a later one', { cause: err });
  }
  if (typeof code === 'string' && code.startsWith('SQLITE_')) {
    const fix = code === 'SQLITE_NOTADB' || code === 'SQLITE_CORRUPT'
      ? 'point --data-dir at a fleetd data directory, or restore a backup (npx fleetd restore FILE)'
      : dataDirFix;
    return new StartupError(`cannot open ${store}: ${message} (${code})`, fix, { cause: err });
  }
  if (typeof code === 'string' && /^E[A-Z]+$/.test(code)) {
    return new StartupError(`cannot open the data directory ${resolvePath(config.dataDir)}: ${reason(err)}`, dataDirFix, { cause: err });
  }
  return err;
}

async function hasFleetdTables(config: Readonly<FleetdConfig>): Promise<boolean> {
  const client = new pg.Client({ connectionString: config.databaseUrl });
  try {
    await client.connect();
    const { rows } = await client.query('SELECT to_regclass($1) AS found', [`${config.databaseSchema}.schema_migrations`]);
    return rows[0].found !== null;
  } finally {
    await client.end().catch(() => {});
  }
}

/**
 * The driver of a store that exists already, migrated: for commands (`fleetd keys`) that work on it
 * without a server. A command run in the wrong folder would otherwise make an empty store, and a key
 * in it that the server never sees.
 */
export async function openExistingDriver(config: Readonly<FleetdConfig>): Promise<Driver> {
  try {
    if (config.databaseUrl === '') {
      if (!existsSync(join(resolvePath(config.dataDir), 'fleetd.db'))) {
        throw new StartupError(
          `there is no fleetd store in ${resolvePath(config.dataDir)} (no fleetd.db)`,
          'run this where `npx fleetd start` runs, or name its store with --data-dir DIR (or FLEETD_DATA_DIR, or FLEETD_DATABASE_URL)',
        );
      }
    } else if (!(await hasFleetdTables(config))) {
      throw new StartupError(
        `there is no fleetd store in schema ${config.databaseSchema} of ${maskedConfig(config).databaseUrl}`,
        'name the database and schema `npx fleetd start` uses (FLEETD_DATABASE_URL, FLEETD_DATABASE_SCHEMA)',
      );
    }
  } catch (err) {
    throw explainStartupError(err, config, 'store');
  }
  let driver: Driver;
  try {
    // SQLite migrates as it opens.
    driver = openDriver(config);
  } catch (err) {
    throw explainStartupError(err, config, 'store');
  }
  try {
    await driver.migrate();
    return driver;
  } catch (err) {
    await driver.close();
    throw explainStartupError(err, config, 'store');
  }
}
