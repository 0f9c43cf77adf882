import { existsSync } from 'node:fs';
import { join, resolve as resolvePath } from 'node:path';
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import pg from 'pg';
import { ConfigError, maskedConfig, resolveConfig, type FleetdConfig } from '../config.js';
import { explainStartupError, StartupError } from '../server/startup.js';
import { openPostgres } from '../store/postgres/driver.js';
import { takeStoreAlone } from './backup.js';

export const migrateUsage = `Usage:
  npx fleetd migrate --to postgres://USER@HOST:PORT/DATABASE [--schema NAME] [--data-dir DIR] [--config FILE]

Copies the SQLite store of DIR — tasks with their tags, dependencies, progress, logs and output,
namespaces, agents, API keys, locks, pipeline runs and their steps, cases, schedules — into an empty PostgreSQL
database (schema NAME, default public), in one transaction, then
checks that every table there holds as many rows as here. Stop the server first. Then start
fleetd with FLEETD_DATABASE_URL (and FLEETD_DATABASE_SCHEMA) set to the same.`;

/** Copied in this order: parents before the rows that refer to them. */
const COPIED = [
  'namespaces',
  'api_keys',
  'agents',
  'tasks',
  'task_tags',
  'task_dependencies',
  'task_activity_totals',
  'task_activity',
  'locks',
  'lock_resources',
  'pipeline_runs',
  'pipeline_steps',
  'pipeline_versions',
  'cases',
  'case_members',
  'schedules',
  'audit_log',
  'type_policies',
  'type_pauses',
  'type_starts',
  'fair_keys',
  'task_usage',
];
/**
 * Not copied: the counters each database keeps by its own triggers (PostgreSQL recounts them as
 * the rows arrive, queued_groups too), SQLite's capability index of agents (an array column there),
 * the migrations, and the namespaces' round-robin clocks (the target's own rows; the keys' passes,
 * copied, are measured against them and only ever catch up), `fair_clock` in a store last written
 * before namespaces had their own (SQLite migration 19) too. Nor the line of lock requests waiting (lock_waiters):
 * requests of the stopped node, which have answered. Nor task_payloads: each long payload goes in its
 * task's row, where PostgreSQL keeps it (TASK_PAYLOAD).
 */
/** Tables a new schema's migrations fill already (the `default` namespace): emptied before the copy, not refused as taken. */
const SEEDED = new Set(['namespaces']);
const NOT_COPIED = new Set(['task_payloads', 'schema_migrations', 'task_counts', 'agent_counts', 'pipeline_run_counts', 'agent_capabilities', 'queued_groups', 'fair_clock', 'fair_clocks', 'lock_waiters']);
/** Rows of one INSERT: at most this many, and about this many bytes of JSON. */
const BATCH_ROWS = 1_000;
const BATCH_BYTES = 8 * 1024 * 1024;

type Row = Record<string, unknown>;

/** A task's payload as copied: a long one from task_payloads (SQLite migration 22), back in its row as PostgreSQL keeps it. */
const TASK_PAYLOAD = "CASE WHEN payload = '' THEN (SELECT p.payload FROM task_payloads p WHERE p.task_id = tasks.id) ELSE payload END";

/** Values whose shape differs between the two drivers. */
function toPostgres(table: string, row: Row): Row {
  if (table === 'agents') return { ...row, capabilities: JSON.parse(row.capabilities as string) };
  if (table === 'api_keys') return { ...row, namespaces: JSON.parse(row.namespaces as string) };
  if (table === 'namespaces') return { ...row, quotas: JSON.parse(row.quotas as string) };
  // A run in flight was held by the SQLite node; released, the first PostgreSQL node takes it at once.
  if (table === 'pipeline_runs') return { ...row, owner: null, lease_expires_at: null };
  return row;
}

function sqliteTables(db: Database.Database): string[] {
  return db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name").pluck().all() as string[];
}

/** `fleetd migrate --to postgres://…`: the SQLite store copied into an empty PostgreSQL database, and checked. */
export async function runMigrate(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      to: { type: 'string' },
      schema: { type: 'string' },
      'data-dir': { type: 'string' },
      config: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(`${migrateUsage}\n`);
    return;
  }
  if (values.to === undefined) throw new ConfigError('--to', 'give the PostgreSQL database to copy the store into: npx fleetd migrate --to postgres://USER@HOST:PORT/DATABASE');
  const env = values.config === undefined ? process.env : { ...process.env, FLEETD_CONFIG: values.config };
  // The source is the SQLite store whatever FLEETD_DATABASE_URL says; --to and --schema name the target.
  const source = resolveConfig({ ...(values['data-dir'] === undefined ? {} : { dataDir: values['data-dir'] }), databaseUrl: '' }, env);
  const target = resolveConfig({ databaseUrl: values.to, ...(values.schema === undefined ? {} : { databaseSchema: values.schema }) }, env);

  const file = join(resolvePath(source.dataDir), 'fleetd.db');
  if (!existsSync(file)) {
    throw new StartupError(`there is no fleetd store in ${resolvePath(source.dataDir)} (no fleetd.db)`, 'name the store to copy with --data-dir DIR (or FLEETD_DATA_DIR)');
  }
  takeStoreAlone(file);
  const sqlite = new Database(file, { readonly: true, fileMustExist: true });
  try {
    const unknown = sqliteTables(sqlite).filter((t) => !COPIED.includes(t) && !NOT_COPIED.has(t));
    if (unknown.length > 0) {
      throw new StartupError(`the store has tables this fleetd does not know how to copy: ${unknown.join(', ')}`, 'migrate with the fleetd version that wrote the store');
    }
    await createSchema(target);
    const counts = await copy(sqlite, target);
    const where = `${maskedConfig(target).databaseUrl} (schema ${target.databaseSchema})`;
    process.stdout.write(
      `copied ${file} to ${where}; rows in each table, here and there:\n` +
        counts.map((c) => `  ${c.table.padEnd(16)} ${String(c.sqlite).padStart(9)} ${String(c.postgres).padStart(9)}\n`).join('') +
        `Start fleetd on it with FLEETD_DATABASE_URL=${maskedConfig(target).databaseUrl}${target.databaseSchema === 'public' ? '' : ` FLEETD_DATABASE_SCHEMA=${target.databaseSchema}`}\n`,
    );
  } finally {
    sqlite.close();
  }
}

/** fleetd's tables in the target schema, by the PostgreSQL driver's own migrations. */
async function createSchema(target: Readonly<FleetdConfig>): Promise<void> {
  const driver = openPostgres({ url: target.databaseUrl, schema: target.databaseSchema, poolSize: 1 });
  try {
    await driver.migrate();
  } catch (err) {
    throw explainStartupError(err, target, 'store');
  } finally {
    await driver.close();
  }
}

async function copy(sqlite: Database.Database, target: Readonly<FleetdConfig>): Promise<{ table: string; sqlite: number; postgres: number }[]> {
  const client = new pg.Client({ connectionString: target.databaseUrl });
  await client.connect();
  try {
    await client.query(`SET search_path TO ${target.databaseSchema}`);
    await client.query('BEGIN');
    const present = COPIED.filter((t) => sqliteTables(sqlite).includes(t));
    for (const table of present) {
      if (SEEDED.has(table)) {
        await client.query(`DELETE FROM ${table}`);
        continue;
      }
      const { rows } = await client.query(`SELECT EXISTS (SELECT 1 FROM ${table}) AS taken`);
      if (rows[0].taken) {
        const where = `${maskedConfig(target).databaseUrl} (schema ${target.databaseSchema})`;
        throw new StartupError(`${where} is not empty: its ${table} table has rows`, 'migrate into an empty database or a new schema (--schema NAME)');
      }
    }
    const counts: { table: string; sqlite: number; postgres: number }[] = [];
    for (const table of present) {
      const columns = await copyTable(sqlite, client, table);
      await advanceSequences(client, table, columns);
      const here = sqlite.prepare(`SELECT count(*) FROM ${table}`).pluck().get() as number;
      const there = Number((await client.query(`SELECT count(*) AS n FROM ${table}`)).rows[0].n);
      counts.push({ table, sqlite: here, postgres: there });
    }
    const wrong = counts.filter((c) => c.sqlite !== c.postgres);
    if (wrong.length > 0) {
      throw new Error(`the copy does not match its source: ${wrong.map((c) => `${c.table} ${c.sqlite} here, ${c.postgres} there`).join('; ')}; nothing was committed`);
    }
    // The counters /v1/stats reads were kept by PostgreSQL's triggers as the rows arrived.
    const counted = Number((await client.query('SELECT coalesce(sum(n), 0) AS n FROM task_counts')).rows[0].n);
    const tasks = counts.find((c) => c.table === 'tasks')?.postgres ?? 0;
    if (counted !== tasks) throw new Error(`task counters say ${counted} tasks, the table holds ${tasks}; nothing was committed`);
    await client.query('COMMIT');
    return counts;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  } finally {
    await client.end();
  }
}

/** Copies one table in batches of rows, the columns matched by name; answers the columns copied. */
async function copyTable(sqlite: Database.Database, client: pg.Client, table: string): Promise<string[]> {
  const columns = (sqlite.pragma(`table_info(${table})`) as { name: string }[]).map((c) => c.name);
  const { rows } = await client.query('SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1', [table]);
  const theirs = new Set(rows.map((r) => r.column_name as string));
  const missing = columns.filter((c) => !theirs.has(c));
  if (missing.length > 0) throw new Error(`PostgreSQL's ${table} table has no column ${missing.join(', ')}`);
  const list = columns.map((c) => `"${c}"`).join(', ');
  const insert = `INSERT INTO ${table} (${list}) SELECT ${list} FROM json_populate_recordset(NULL::${table}, $1)`;
  let batch: string[] = [];
  let bytes = 0;
  const flush = async () => {
    if (batch.length === 0) return;
    await client.query(insert, [`[${batch.join(',')}]`]);
    batch = [];
    bytes = 0;
  };
  const longPayloads = table === 'tasks' && sqliteTables(sqlite).includes('task_payloads');
  const read = columns.map((c) => (longPayloads && c === 'payload' ? `${TASK_PAYLOAD} AS "payload"` : `"${c}"`)).join(', ');
  for (const row of sqlite.prepare(`SELECT ${read} FROM ${table}`).iterate() as IterableIterator<Row>) {
    const json = JSON.stringify(toPostgres(table, row));
    batch.push(json);
    bytes += json.length;
    if (batch.length >= BATCH_ROWS || bytes >= BATCH_BYTES) await flush();
  }
  await flush();
  return columns;
}

/** Ids given by a sequence continue after the copied ones, so that new rows never collide with them. */
async function advanceSequences(client: pg.Client, table: string, columns: string[]): Promise<void> {
  const { rows } = await client.query(
    "SELECT column_name, column_default FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1 AND column_default LIKE 'nextval(%'",
    [table],
  );
  for (const { column_name: column, column_default: fallback } of rows as { column_name: string; column_default: string }[]) {
    if (!columns.includes(column)) continue;
    const sequence = /^nextval\('([^']+)'/.exec(fallback)?.[1];
    if (!sequence) continue;
    const max = Number((await client.query(`SELECT coalesce(max("${column}"), 0) AS max FROM ${table}`)).rows[0].max);
    if (max > 0) await client.query('SELECT setval($1::regclass, $2)', [sequence, max]);
  }
}
