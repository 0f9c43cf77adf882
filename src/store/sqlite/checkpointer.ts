import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import type Database from 'better-sqlite3';

/** How often the checkpoint thread copies what the WAL has gained into the database file. */
export const CHECKPOINT_INTERVAL_MS = 100;
/**
 * The WAL starts again from its beginning only at a write that finds every frame copied, and under
 * load the server's commits land in nearly every checkpoint. So once the WAL is RESTART_FRAMES long
 * and still being written, the thread checks again every RESTART_POLL_MS, up to RESTART_TRIES
 * times: a check with little to copy ends between two commits, and the next commit starts the WAL
 * again (in a drain, within 3 to 14 checks).
 */
const RESTART_FRAMES = 1000;
const RESTART_POLL_MS = 1;
const RESTART_TRIES = 100;
/**
 * SQLite's own checkpoints on the server's connection while the thread runs: a bound on the WAL,
 * should the thread not find a moment between commits for that long, and cheap then, the thread
 * having copied all but the last frames. Put back to SQLite's default of 1,000 pages if the thread
 * stops.
 */
const AUTOCHECKPOINT_PAGES_WITH_THREAD = 4_000;
const SQLITE_AUTOCHECKPOINT_PAGES = 1000;
/** Failed checkpoints in a row (a full disk, a failing read) after which the thread gives checkpoints back. */
const MAX_FAILURES = 5;
/** How long closing waits for the thread to close its connection, should it be in the middle of a checkpoint. */
const CLOSE_WAIT_MS = 5_000;

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
    let backfilled = 0;
    let seen = 0;
    let tries = 0;
    let failures = 0;
    let wait = ${CHECKPOINT_INTERVAL_MS};
    while (Atomics.wait(shared, ${STOP}, 0, wait) === 'timed-out') {
      try {
        const [{ busy, log, checkpointed }] = db.pragma('wal_checkpoint(PASSIVE)');
        failures = 0;
        // Busy: another checkpoint (the server's past its bound, a backup's) holds the lock, and nothing is known.
        if (!busy) {
          if (log < seen ? checkpointed > 0 : checkpointed > backfilled) Atomics.add(shared, ${CHECKPOINTS}, 1);
          backfilled = checkpointed;
          if (log < ${RESTART_FRAMES} || tries >= ${RESTART_TRIES}) tries = 0;
          else if (tries > 0 || log !== seen) tries++;
          seen = log;
        }
      } catch (err) {
        if (++failures >= ${MAX_FAILURES}) throw err;
        tries = 0;
      }
      wait = tries > 0 ? ${RESTART_POLL_MS} : ${CHECKPOINT_INTERVAL_MS};
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
 * drain met 40 of these a run, 6 to 7 ms each). Here the thread copies the new frames every
 * CHECKPOINT_INTERVAL_MS on the core the server leaves idle, with PASSIVE checkpoints, which never
 * wait for the server's writes nor they for it; the server's connection checkpoints only should the
 * WAL pass AUTOCHECKPOINT_PAGES_WITH_THREAD, and then has little left to copy. Should the thread
 * not start, or stop for any reason but closing, the server's connection checkpoints as SQLite does
 * by default, and a warning says so.
 */
export class WalCheckpointer {
  private readonly shared = new Int32Array(new SharedArrayBuffer(3 * Int32Array.BYTES_PER_ELEMENT));
  private readonly thread: Worker | undefined;
  private closing = false;
  /** Why the thread did not start or stopped before closing, if it did: the server's connection checkpoints as by default since. */
  failure: Error | undefined;

  constructor(
    private readonly db: Database.Database,
    file: string,
    synchronous: 'NORMAL' | 'FULL',
  ) {
    try {
      this.thread = new Worker(THREAD_SOURCE, {
        eval: true,
        execArgv: [],
        workerData: { betterSqlite3: createRequire(import.meta.url).resolve('better-sqlite3'), file, synchronous, shared: this.shared.buffer },
      });
    } catch (err) {
      this.stoppedEarly(err as Error);
      return;
    }
    db.pragma(`wal_autocheckpoint = ${AUTOCHECKPOINT_PAGES_WITH_THREAD}`);
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
    if (this.thread && !this.failure) Atomics.wait(this.shared, CLOSED, 0, CLOSE_WAIT_MS);
  }

  private stoppedEarly(err: Error): void {
    if (this.closing || this.failure) return;
    this.failure = err;
    if (this.db.open) this.db.pragma(`wal_autocheckpoint = ${SQLITE_AUTOCHECKPOINT_PAGES}`);
    process.emitWarning(`SQLite's checkpoint thread stopped (${err.message}); the server's connection checkpoints the WAL itself again`, 'FleetdWarning');
  }
}
