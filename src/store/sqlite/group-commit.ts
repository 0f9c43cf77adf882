import type { Database, Statement } from 'better-sqlite3';
import { FleetError } from '../../domain/errors.js';

interface PendingWrite {
  run: () => unknown;
  resolve: (value: unknown) => void;
  reject: (reason: unknown) => void;
}

/**
 * Group commit: every write that arrives during one turn of the event loop runs in one
 * transaction, committed on the next `setImmediate`, and each caller's promise settles only after
 * that commit. SQLite has one writer, so this — not a pool of connections — is what turns many
 * small concurrent writes into few fsync-free commits.
 *
 * Each write runs inside its own SAVEPOINT, so one failing write (a conflict, a bad state) rolls
 * back alone and the rest of the group still commits.
 */
export class GroupCommit {
  private pending: PendingWrite[] = [];
  private scheduled = false;
  /** Between a group's commit and the end of the work its callers did on it: see `write`. */
  private chaining = false;
  private readonly begin: Statement;
  private readonly commit: Statement;
  private readonly rollback: Statement;
  private readonly savepoint: Statement;
  private readonly release: Statement;
  private readonly rollbackTo: Statement;
  /** Groups committed and the writes they carried since start, for metrics: how much batching is actually happening. */
  groups = 0;
  writes = 0;
  /** Milliseconds the event loop spent in COMMIT since start: SQLite writes the group's pages to the WAL there, and checkpoints it where it does so in the commit. */
  commitMs = 0;

  /** `onCommit`: told the number of groups committed so far, after each commit. */
  constructor(
    private readonly db: Database,
    private readonly onCommit?: (groups: number) => void,
  ) {
    this.begin = db.prepare('BEGIN IMMEDIATE');
    this.commit = db.prepare('COMMIT');
    this.rollback = db.prepare('ROLLBACK');
    this.savepoint = db.prepare('SAVEPOINT w');
    this.release = db.prepare('RELEASE w');
    this.rollbackTo = db.prepare('ROLLBACK TO w');
  }

  /**
   * A write made while its group's callers act on a commit (a submit's commit wakes a waiting
   * agent, whose claim is such a write) joins a group committed as soon as they are done, in the
   * same turn of the event loop: the task reaches the agent without waiting a turn behind
   * everything else the server is doing. Writes arriving with I/O wait for `setImmediate`, so
   * that one turn's requests share one transaction.
   */
  write<T>(run: () => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.pending.push({ run, resolve: resolve as (value: unknown) => void, reject });
      if (!this.scheduled && !this.chaining) {
        this.scheduled = true;
        setImmediate(this.flush);
      }
    });
  }

  /** Commits whatever is pending now; used on close so that nothing acknowledged-to-be is dropped. */
  flush = (): void => {
    this.scheduled = false;
    this.commitPending(true);
  };

  /**
   * Runs after every promise job the commit's callers started: a tick queued from a promise job
   * runs once the job queue is empty. One chained group per commit, so a chain cannot starve I/O.
   */
  private readonly endChain = (): void => {
    this.chaining = false;
    this.commitPending(false);
    if (this.pending.length > 0 && !this.scheduled) {
      this.scheduled = true;
      setImmediate(this.flush);
    }
  };

  private commitPending(chain: boolean): void {
    const group = this.pending;
    if (group.length === 0) return;
    this.pending = [];
    const outcomes: { ok: boolean; value: unknown }[] = new Array(group.length);
    try {
      this.begin.run();
    } catch (err) {
      for (const w of group) w.reject(translateSqliteError(err));
      return;
    }
    if (group.length === 1) {
      // Alone in its group, a write needs no savepoint: if it fails, the whole transaction goes.
      try {
        outcomes[0] = { ok: true, value: group[0].run() };
      } catch (err) {
        this.rollback.run();
        group[0].reject(translateSqliteError(err));
        return;
      }
    } else {
      for (let i = 0; i < group.length; i++) {
        this.savepoint.run();
        try {
          outcomes[i] = { ok: true, value: group[i].run() };
          this.release.run();
        } catch (err) {
          this.rollbackTo.run();
          this.release.run();
          outcomes[i] = { ok: false, value: translateSqliteError(err) };
        }
      }
    }
    const committing = performance.now();
    try {
      this.commit.run();
    } catch (err) {
      if (this.db.inTransaction) this.rollback.run();
      const failure = translateSqliteError(err);
      for (const w of group) w.reject(failure);
      return;
    }
    this.commitMs += performance.now() - committing;
    this.groups++;
    this.writes += group.length;
    for (let i = 0; i < group.length; i++) {
      const outcome = outcomes[i];
      if (outcome.ok) group[i].resolve(outcome.value);
      else group[i].reject(outcome.value);
    }
    this.onCommit?.(this.groups);
    if (chain) {
      this.chaining = true;
      queueMicrotask(() => process.nextTick(this.endChain));
    }
  }
}

/** SQLite's own failures become coded errors a client can act on; anything else passes through. */
export function translateSqliteError(err: unknown): unknown {
  const code = (err as { code?: string } | null)?.code;
  if (code === 'SQLITE_FULL') {
    return new FleetError('FLEETD_ERR_STORAGE_FULL', 'the disk holding the database is full; nothing was written');
  }
  if (code === 'SQLITE_BUSY' || code === 'SQLITE_IOERR' || code === 'SQLITE_CANTOPEN' || code === 'SQLITE_READONLY') {
    return new FleetError('FLEETD_ERR_STORE_UNAVAILABLE', `the database is unavailable (${code}); nothing was written`);
  }
  return err;
}
