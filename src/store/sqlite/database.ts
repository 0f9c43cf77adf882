import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import Database, { type Statement } from 'better-sqlite3';
import type { Page } from '../../domain/types.js';
import { keysetPage, type KeysetQuery } from '../keyset.js';
import { WalCheckpointer } from './checkpointer.js';
import { GroupCommit } from './group-commit.js';
import { migrate } from './migrations.js';

export interface SqliteOptions {
  /** Folder for fleetd.db; created if missing. `:memory:` keeps everything in memory (tests only). */
  dataDir: string;
  /**
   * SQLite's `synchronous` pragma. NORMAL (default) survives a crash of fleetd (kill -9) with no
   * loss; FULL also survives power loss, at the cost of an fsync on every commit.
   */
  synchronous?: 'NORMAL' | 'FULL';
  /**
   * Most MiB of database pages kept in memory (SQLite's page cache). It fills as the database
   * grows and is then reused, so it is a ceiling on the process's memory, not a reservation.
   * Defaults to 16.
   */
  cacheMb?: number;
  /**
   * Where the WAL is checkpointed: `commit` (default), inside the commit that fills the WAL, as SQLite
   * does by default; `thread`, on a thread of its own once the store has committed
   * CHECKPOINT_THREAD_AFTER_COMMITS times (see checkpointer.ts).
   */
  checkpoints?: 'thread' | 'commit';
}

/**
 * The longest payload text a task's row keeps. A longer one goes in task_payloads and the row's
 * payload column is left '' (never a JSON text): SQLite writes a row again whole at every update, so
 * a prompt in the row would be written to the WAL again by each lease, extension and completion,
 * though none of them changes it. Up to about this size the row's own page costs as much.
 */
export const INLINE_PAYLOAD_MAX = 1024;

/**
 * With `checkpoints: 'thread'`, commits after which the WAL is checkpointed on a thread of its own
 * (see checkpointer.ts). Before, SQLite checkpoints it in the commit that needs it, as it does by
 * default: a store this quiet pays a few milliseconds now and then, and starts no thread.
 */
export const CHECKPOINT_THREAD_AFTER_COMMITS = 256;

/**
 * The one long-lived better-sqlite3 connection every area of the SQLite driver shares, in WAL
 * mode, with group commit for writes. Reads run at once on the same connection; they see only
 * committed data because a group's transaction opens and commits inside one synchronous flush.
 * Migrations run on opening, so that the areas' prepared statements see the final schema.
 */
export class SqliteDatabase {
  readonly db: Database.Database;
  readonly groupCommit: GroupCommit;
  private readonly dynamic = new Map<string, Statement>();
  private readonly storedPayload: Statement;
  /** With `checkpoints: 'thread'`, set once CHECKPOINT_THREAD_AFTER_COMMITS groups have committed, for a database in a file. */
  checkpointer: WalCheckpointer | undefined;

  constructor(options: SqliteOptions) {
    const file = options.dataDir === ':memory:' ? ':memory:' : join(options.dataDir, 'fleetd.db');
    if (file !== ':memory:') mkdirSync(options.dataDir, { recursive: true });
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    const synchronous = options.synchronous ?? 'NORMAL';
    this.db.pragma(`synchronous = ${synchronous}`);
    this.db.pragma('foreign_keys = ON');
    this.db.pragma('temp_store = MEMORY');
    // Negative: a size in KiB rather than pages. The hot rows and indexes of the queue (queued tasks,
    // leases, counters) take a few MiB; 64 MiB, the earlier size, made the server's memory climb for
    // as long as the database grew towards it, which read as a leak in the soak.
    this.db.pragma(`cache_size = -${Math.round((options.cacheMb ?? 16) * 1024)}`);
    this.db.pragma('busy_timeout = 5000');
    migrate(this.db);
    const startsCheckpointer = file !== ':memory:' && options.checkpoints === 'thread';
    this.groupCommit = new GroupCommit(
      this.db,
      startsCheckpointer
        ? (groups) => {
            if (groups !== CHECKPOINT_THREAD_AFTER_COMMITS) return;
            // After the turn: starting a thread takes a few milliseconds, which the commit's callers need not wait.
            setImmediate(() => {
              if (this.db.open) this.checkpointer = new WalCheckpointer(this.db, file, synchronous);
            });
          }
        : undefined,
    );
    this.storedPayload = this.db.prepare('SELECT payload FROM task_payloads WHERE task_id = ?').pluck();
  }

  /**
   * A task's row as read, with its payload where the row keeps it in task_payloads (see
   * INLINE_PAYLOAD_MAX): from `known` (payloads read already, by task id), else read now.
   */
  withPayload = <R extends { id: number; payload: string }>(row: R, known?: ReadonlyMap<number, string>): R => {
    if (row.payload !== '') return row;
    const payload = known?.get(row.id) ?? (this.storedPayload.get(row.id) as string | undefined);
    if (payload === undefined) throw new Error(`task ${row.id} keeps its payload in task_payloads, and it is not there`);
    row.payload = payload;
    return row;
  };

  /** A statement whose text is built at run time (a list's filters), prepared once per text. */
  statement(sql: string): Statement {
    let stmt = this.dynamic.get(sql);
    if (!stmt) {
      stmt = this.db.prepare(sql);
      this.dynamic.set(sql, stmt);
    }
    return stmt;
  }

  /**
   * A statement ending in `LIMIT <n>` with n written into its text: `withLimit(sql)(n)`. SQLite's
   * planner reads a LIMIT bound as a parameter and so prepares such a statement again every time
   * one is bound (about 8 µs a call, more than the seek itself). Limits up to 64 get a statement
   * each; larger ones the next power of two, so a caller wanting exactly n takes the first n rows.
   */
  withLimit(sql: string): (limit: number) => Statement {
    const byLimit = new Map<number, Statement>();
    return (limit) => {
      const n = limit <= 64 ? Math.max(1, Math.trunc(limit)) : 2 ** Math.ceil(Math.log2(limit));
      let stmt = byLimit.get(n);
      if (!stmt) {
        stmt = this.db.prepare(`${sql} LIMIT ${n}`);
        byLimit.set(n, stmt);
      }
      return stmt;
    };
  }

  /**
   * A statement whose rows come back as objects of one fixed shape (see `RowStatement`), for the
   * rows the hot path reads whole: a task's 34 columns, an agent's.
   */
  rows(sql: string): RowStatement {
    return new RowStatement(this.db.prepare(sql));
  }

  /** `rows` for statements that answer whole task rows: each with its payload (see withPayload). */
  taskRows(sql: string): RowStatement {
    return new RowStatement(this.db.prepare(sql), (row) => this.withPayload(row as { id: number; payload: string }));
  }

  /** One page of a list (see keyset.ts). */
  page<R>(q: KeysetQuery<R>): Promise<Page<R>> {
    return keysetPage(q, () => '?', (text, values) => this.statement(text).all(...values) as R[]);
  }

  close(): void {
    this.groupCommit.flush();
    this.checkpointer?.close();
    if (this.db.open) this.db.close();
  }
}

/**
 * A statement that returns rows, read as arrays and built into objects by a function made for its
 * columns. better-sqlite3 builds a row object one property at a time, as a dictionary (about 6 µs for
 * a task's 34 columns); an array and an object literal cost half, and every row of those columns has
 * one hidden class, for which the code that reads them is compiled.
 */
export class RowStatement {
  private readonly build: (values: unknown[]) => unknown;

  /** `finish`: what each row built goes through before it is answered. */
  constructor(
    private readonly stmt: Statement,
    finish?: (row: unknown) => unknown,
  ) {
    stmt.raw(true);
    const build = builderFor(stmt.columns().map((c) => c.name));
    this.build = finish ? (values) => finish(build(values)) : build;
  }

  get(...params: unknown[]): unknown {
    const values = this.stmt.get(...params) as unknown[] | undefined;
    return values === undefined ? undefined : this.build(values);
  }

  all(...params: unknown[]): unknown[] {
    return (this.stmt.all(...params) as unknown[][]).map(this.build);
  }
}

const builders = new Map<string, (values: unknown[]) => unknown>();

/** One builder per list of column names, so that every statement returning a table's rows shares a shape. */
function builderFor(columns: string[]): (values: unknown[]) => unknown {
  const key = JSON.stringify(columns);
  let build = builders.get(key);
  if (!build) {
    // A later column of the same name wins, as in better-sqlite3's own row objects.
    const fields = new Map(columns.map((name, i) => [name, i]));
    build = new Function('v', `return {${[...fields].map(([name, i]) => `${JSON.stringify(name)}: v[${i}]`).join(', ')}};`) as (values: unknown[]) => unknown;
    builders.set(key, build);
  }
  return build;
}
