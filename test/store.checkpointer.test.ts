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
  /** The database's size as the server's connection sees it, WAL included: the file's once every frame is copied. */
  const pages = () => (db.pragma('page_count', { simple: true }) as number) * (db.pragma('page_size', { simple: true }) as number);

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

  it("copies the WAL into the database file itself, so that the server's connection does not checkpoint and the WAL is reused", async () => {
    checkpointer = new WalCheckpointer(db, file, 'NORMAL');
    assert.ok((db.pragma('wal_autocheckpoint', { simple: true }) as number) > 1000, "the server's connection checkpoints only past a far bound");

    write(4);
    // In WAL mode only a checkpoint writes the database file: here, only the thread's.
    await until('a checkpoint that copies the rows', () => checkpointer!.checkpoints >= 1);
    await until('every page copied into the database file', () => size(file) >= pages());
    const walAfterFirst = size(`${file}-wal`);

    // Every frame copied, the next write starts the WAL again from its beginning instead of growing it.
    await sleep(2 * CHECKPOINT_INTERVAL_MS);
    write(4);
    assert.ok(size(`${file}-wal`) <= walAfterFirst * 1.25, `the WAL is reused: ${size(`${file}-wal`)} bytes after 8 MB written, ${walAfterFirst} after 4`);
    await until('the second rows copied', () => size(file) >= pages() && size(file) > 8_000_000);
    assert.equal(db.prepare('SELECT count(*) FROM t').pluck().get(), 2 * 2_000);
  });

  it('keeps the WAL short while the server goes on writing, by finding a moment between two commits', async () => {
    checkpointer = new WalCheckpointer(db, file, 'NORMAL');
    write(1);
    await until('the thread running', () => checkpointer!.checkpoints >= 1);
    let longest = 0;
    // 24 MB more, 1 MB every 50 ms in commits of 200 KB, as a busy server's turns would write it.
    for (let i = 0; i < 24; i++) {
      write(1);
      longest = Math.max(longest, size(`${file}-wal`));
      await sleep(50);
    }
    assert.ok(checkpointer.checkpoints >= 3, `checkpoints: ${checkpointer.checkpoints}`);
    assert.ok(longest < 12_000_000, `the WAL started again from its beginning rather than grow: at most ${longest} bytes for 24 MB written`);
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

describe("SqliteDatabase's checkpoint thread (checkpoints: 'thread')", () => {
  it(`starts, where asked, after ${CHECKPOINT_THREAD_AFTER_COMMITS} commits of a database in a file; not for one in memory, nor by default`, async () => {
    const dirs = [tempDir(), tempDir()];
    const onDisk = new SqliteDatabase({ dataDir: dirs[0], checkpoints: 'thread' });
    const inCommits = new SqliteDatabase({ dataDir: dirs[1] });
    const inMemory = new SqliteDatabase({ dataDir: ':memory:', checkpoints: 'thread' });
    const all = [onDisk, inCommits, inMemory];
    try {
      for (const database of all) database.db.exec('CREATE TABLE t (v INTEGER)');
      const commitEach = (v: number) => Promise.all(all.map((database) => database.groupCommit.write(() => database.db.prepare('INSERT INTO t (v) VALUES (?)').run(v))));
      for (let i = 1; i < CHECKPOINT_THREAD_AFTER_COMMITS; i++) await commitEach(i);
      assert.equal(onDisk.checkpointer, undefined, 'a quiet store starts no thread');
      assert.equal(onDisk.db.pragma('wal_autocheckpoint', { simple: true }), 1000, "SQLite's default");
      await commitEach(0);
      await new Promise((resolve) => setImmediate(resolve));
      assert.ok(onDisk.checkpointer, 'the thread starts after the commit that reaches the count');
      assert.ok((onDisk.db.pragma('wal_autocheckpoint', { simple: true }) as number) > 1000);
      assert.equal(inCommits.checkpointer, undefined, 'by default SQLite checkpoints in the commits');
      assert.equal(inCommits.db.pragma('wal_autocheckpoint', { simple: true }), 1000);
      assert.equal(inMemory.checkpointer, undefined, 'a database in memory has no WAL to checkpoint');
      await until('its first checkpoint', () => onDisk.checkpointer!.checkpoints >= 1);
    } finally {
      for (const database of all) database.close();
      for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
    }
  });
});
