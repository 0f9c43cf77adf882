import assert from 'node:assert/strict';
import { existsSync, renameSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import { CHECKPOINT_INTERVAL_MS, WalCheckpointer } from '../src/store/sqlite/checkpointer.js';
import { CHECKPOINT_THREAD_AFTER_COMMITS, SqliteDatabase } from '../src/store/sqlite/database.js';
import { tempDir } from './helpers.js';

/** Polls `done` until it holds, or fails saying `what` after `ms`. */
async function until(what: string, done: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!done()) {
    if (Date.now() > deadline) assert.fail(`${what}: not within ${ms} ms`);
    await sleep(10);
  }
}

/** The WAL checkpointed on a thread of its own, on a real SQLite file, as the server's store uses it. */
describe('WalCheckpointer', () => {
  let dir: string;
  let file: string;
  let db: Database.Database;
  let checkpointer: WalCheckpointer | undefined;
  const ROW = 'x'.repeat(2_000);
  /** About `mb` MB of rows, in transactions of 100 rows. */
  const write = (mb: number) => {
    const insert = db.prepare('INSERT INTO t (v) VALUES (?)');
    const many = db.transaction((n: number) => {
      for (let i = 0; i < n; i++) insert.run(ROW);
    });
    for (let written = 0; written < mb * 1_000_000; written += 100 * ROW.length) many(100);
  };
  const size = (path: string) => (existsSync(path) ? statSync(path).size : 0);

  beforeEach(() => {
    dir = tempDir();
    file = join(dir, 'fleetd.db');
    db = new Database(file);
    db.pragma('journal_mode = WAL');
    db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)');
  });
  afterEach(() => {
    checkpointer?.close();
    checkpointer = undefined;
    if (db.open) db.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("copies the WAL into the database file itself, so that the server's connection never checkpoints and the WAL is reused", async () => {
    checkpointer = new WalCheckpointer(db, file, 'NORMAL');
    assert.equal(db.pragma('wal_autocheckpoint', { simple: true }), 0, "the server's connection does not checkpoint");

    write(4);
    // In WAL mode only a checkpoint writes the database file: here, only the thread's.
    await until('a checkpoint that copies the rows', () => checkpointer!.checkpoints >= 1);
    await until('the rows copied into the database file', () => size(file) > 4_000_000);
    const walAfterFirst = size(`${file}-wal`);

    // Every frame copied, the next write starts the WAL again from its beginning instead of growing it.
    await sleep(3 * CHECKPOINT_INTERVAL_MS);
    write(4);
    assert.ok(size(`${file}-wal`) <= walAfterFirst * 1.25, `the WAL is reused: ${size(`${file}-wal`)} bytes after 8 MB written, ${walAfterFirst} after 4`);
    await until('the second rows copied', () => size(file) > 8_000_000);
    assert.equal(db.prepare('SELECT count(*) FROM t').pluck().get(), 2 * 2_000);
  });

  it("closes its connection before the server's, which then folds the WAL back and removes it", async () => {
    checkpointer = new WalCheckpointer(db, file, 'NORMAL');
    write(1);
    await until('a checkpoint', () => checkpointer!.checkpoints >= 1);
    checkpointer.close();
    db.close();
    assert.equal(existsSync(`${file}-wal`), false, "the server's connection was the last: SQLite removed the WAL as it closed");
    const reopened = new Database(file, { readonly: true });
    try {
      assert.equal(reopened.prepare('SELECT count(*) FROM t').pluck().get(), 500);
    } finally {
      reopened.close();
    }
  });

  it("hands checkpoints back to the server's connection when its thread cannot go on, and writes go on", async () => {
    // The thread opens the database by its path: moved, it is not there.
    const moved = `${dir}-moved`;
    renameSync(dir, moved);
    try {
      checkpointer = new WalCheckpointer(db, file, 'NORMAL');
      await until('the thread to stop', () => checkpointer!.failure !== undefined);
      assert.match(checkpointer.failure!.message, /database|exited/i);
      assert.equal(db.pragma('wal_autocheckpoint', { simple: true }), 1000, 'SQLite checkpoints in the commits again, as by default');
      write(8);
      assert.ok(size(join(moved, 'fleetd.db-wal')) < 6_000_000, `SQLite's own checkpoints keep the WAL near 1,000 pages: ${size(join(moved, 'fleetd.db-wal'))} bytes`);
      assert.equal(db.prepare('SELECT count(*) FROM t').pluck().get(), 4_000);
    } finally {
      db.close();
      renameSync(moved, dir);
    }
  });
});

describe("SqliteDatabase's checkpoint thread", () => {
  it(`starts after ${CHECKPOINT_THREAD_AFTER_COMMITS} commits of a database in a file, and not for one in memory`, async () => {
    const dir = tempDir();
    const onDisk = new SqliteDatabase({ dataDir: dir });
    const inMemory = new SqliteDatabase({ dataDir: ':memory:' });
    try {
      for (const database of [onDisk, inMemory]) database.db.exec('CREATE TABLE t (v INTEGER)');
      const commit = (database: SqliteDatabase, v: number) => database.groupCommit.write(() => database.db.prepare('INSERT INTO t (v) VALUES (?)').run(v));
      for (let i = 1; i < CHECKPOINT_THREAD_AFTER_COMMITS; i++) {
        await commit(onDisk, i);
        await commit(inMemory, i);
      }
      assert.equal(onDisk.checkpointer, undefined, 'a quiet store starts no thread');
      assert.notEqual(onDisk.db.pragma('wal_autocheckpoint', { simple: true }), 0);
      await commit(onDisk, 0);
      await commit(inMemory, 0);
      assert.ok(onDisk.checkpointer, 'the thread starts with the commit that reaches the count');
      assert.equal(onDisk.db.pragma('wal_autocheckpoint', { simple: true }), 0);
      assert.equal(inMemory.checkpointer, undefined, 'a database in memory has no WAL to checkpoint');
      await until('its first checkpoint', () => onDisk.checkpointer!.checkpoints >= 1);
    } finally {
      onDisk.close();
      inMemory.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
