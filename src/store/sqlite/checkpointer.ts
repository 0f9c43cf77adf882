import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import type Database from 'better-sqlite3';

/** How often the checkpoint thread copies what the WAL has gained into the database file. */
export const CHECKPOINT_INTERVAL_MS = 100;
/** How long closing waits for the thread to close its connection, should it be in the middle of a checkpoint. */
const CLOSE_WAIT_MS = 5_000;
/** SQLite's own default, put back on the server's connection if the thread stops: the WAL stays bounded either way. */
const SQLITE_AUTOCHECKPOINT_PAGES = 1000;

// Slots of the Int32Array both threads share.
const STOP = 0;
const CLOSED = 1;
const CHECKPOINTS = 2;

/**
 * The thread's code. A CommonJS script given as text rather than a module of this package, so that
 * it starts without the TypeScript loader the tests run under (`execArgv: []`); better-sqlite3 is
 * loaded by the path the server resolved. It sleeps in `Atomics.wait`, which closing ends at once.
 */
const THREAD_SOURCE = `
const { workerData } = require('node:worker_threads');
const shared = new Int32Array(workerData.shared);
try {
  const Database = require(workerData.betterSqlite3);
  const db = new Database(workerData.file, { fileMustExist: true });
  try {
    db.pragma('busy_timeout = 5000');
    db.pragma('synchronous = ' + workerData.synchronous);
    let backfilled = -1;
    while (Atomics.wait(shared, ${STOP}, 0, workerData.intervalMs) === 'timed-out') {
      const [{ checkpointed }] = db.pragma('wal_checkpoint(PASSIVE)');
      if (checkpointed > 0 && checkpointed !== backfilled) Atomics.add(shared, ${CHECKPOINTS}, 1);
      backfilled = checkpointed;
    }
  } finally {
    db.close();
  }
} finally {
  Atomics.store(shared, ${CLOSED}, 1);
  Atomics.notify(shared, ${CLOSED});
}
`;

/**
 * Checkpoints the WAL on a thread of its own, with a connection of its own. SQLite checkpoints
 * inside the commit that takes the WAL past 1,000 pages: it copies them into the database file and
 * syncs both files, a few milliseconds during which the server's one thread answers nothing (a
 * drain paid 44 of these a run, 6.6 ms each). Here the server's connection never checkpoints
 * (`wal_autocheckpoint = 0`) and this thread copies the new frames every CHECKPOINT_INTERVAL_MS on
 * the core the server leaves idle. A PASSIVE checkpoint never waits for the server's writes, nor they
 * for it. Should the thread stop for any reason but closing, the server's connection checkpoints
 * itself again, as SQLite does by default.
 */
export class WalCheckpointer {
  private readonly shared = new Int32Array(new SharedArrayBuffer(3 * Int32Array.BYTES_PER_ELEMENT));
  private readonly thread: Worker;
  private closing = false;
  /** Why the thread stopped before closing, if it did: the server's connection checkpoints itself since. */
  failure: Error | undefined;

  constructor(
    private readonly db: Database.Database,
    file: string,
    synchronous: 'NORMAL' | 'FULL',
  ) {
    db.pragma('wal_autocheckpoint = 0');
    this.thread = new Worker(THREAD_SOURCE, {
      eval: true,
      execArgv: [],
      workerData: {
        betterSqlite3: createRequire(import.meta.url).resolve('better-sqlite3'),
        file,
        synchronous,
        shared: this.shared.buffer,
        intervalMs: CHECKPOINT_INTERVAL_MS,
      },
    });
    // The server's exit never waits for a checkpoint: what the WAL holds is already durable.
    this.thread.unref();
    this.thread.on('error', (err) => this.stoppedEarly(err));
    this.thread.on('exit', (code) => this.stoppedEarly(new Error(`the checkpoint thread exited with code ${code}`)));
  }

  /** Checkpoints the thread has run that copied frames into the database file. */
  get checkpoints(): number {
    return Atomics.load(this.shared, CHECKPOINTS);
  }

  /** Stops the thread and waits (a bounded time) until its connection is closed, so that the server's is the last. */
  close(): void {
    if (this.closing) return;
    this.closing = true;
    Atomics.store(this.shared, STOP, 1);
    Atomics.notify(this.shared, STOP);
    if (!this.failure) Atomics.wait(this.shared, CLOSED, 0, CLOSE_WAIT_MS);
  }

  private stoppedEarly(err: Error): void {
    if (this.closing || this.failure) return;
    this.failure = err;
    if (this.db.open) this.db.pragma(`wal_autocheckpoint = ${SQLITE_AUTOCHECKPOINT_PAGES}`);
  }
}
