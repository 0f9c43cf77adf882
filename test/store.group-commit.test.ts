import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it, mock } from 'node:test';
import Database from 'better-sqlite3';
import { FleetError } from '../src/domain/errors.js';
import { GroupCommit, translateSqliteError } from '../src/store/sqlite/group-commit.js';
import { tempDir } from './helpers.js';

/**
 * GroupCommit on a real SQLite file, with setImmediate on fake timers: the test decides when the
 * turn of the event loop ends, and reads what is committed through a second connection.
 */
describe('GroupCommit', () => {
  let dir: string;
  let db: Database.Database;
  let reader: Database.Database;
  let commits: GroupCommit;
  const committed = () => (reader.prepare('SELECT v FROM t ORDER BY v').all() as { v: string }[]).map((r) => r.v);
  const insert = (v: string) => () => db.prepare('INSERT INTO t (v) VALUES (?)').run(v).lastInsertRowid;
  /** 'pending' unless every promise settles within one (real) timer turn. */
  const states = (promises: Promise<unknown>[]) =>
    Promise.race([Promise.allSettled(promises), new Promise((r) => setTimeout(r, 0, 'pending'))]);

  beforeEach(() => {
    dir = tempDir();
    db = new Database(join(dir, 'db.sqlite'));
    db.pragma('journal_mode = WAL');
    db.exec('CREATE TABLE t (v TEXT NOT NULL UNIQUE)');
    reader = new Database(join(dir, 'db.sqlite'), { readonly: true });
    commits = new GroupCommit(db);
    mock.timers.enable({ apis: ['setImmediate'] });
  });
  afterEach(() => {
    mock.timers.reset();
    reader.close();
    db.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('commits the writes of one turn of the event loop in one transaction, and answers only after the commit', async () => {
    const writes = ['a', 'b', 'c'].map((v) => commits.write(insert(v)));
    assert.equal(await states(writes), 'pending', 'no write is answered before its commit');
    assert.deepEqual(committed(), [], 'nothing is committed before the turn ends');
    mock.timers.tick(0);
    const ids = await Promise.all(writes);
    assert.deepEqual(committed(), ['a', 'b', 'c']);
    assert.deepEqual(ids.map(Number), [1, 2, 3], 'each caller gets its own write’s result');
    assert.deepEqual({ groups: commits.groups, writes: commits.writes }, { groups: 1, writes: 3 });
  });

  it('writes of later turns go into later groups', async () => {
    const first = commits.write(insert('a'));
    mock.timers.tick(0);
    await first;
    const second = commits.write(insert('b'));
    mock.timers.tick(0);
    await second;
    assert.deepEqual({ groups: commits.groups, writes: commits.writes }, { groups: 2, writes: 2 });
  });

  it('a write its callers make on a commit (a claim a submit woke) is committed in the same turn, not the next', async () => {
    const submit = commits.write(insert('task'));
    mock.timers.tick(0);
    await submit;
    // What the submit's caller does next, a few promise jobs later, as a woken claim would.
    await Promise.resolve();
    const claim = commits.write(insert('lease'));
    assert.notEqual(await states([claim]), 'pending', 'the claim commits without waiting for the next turn');
    await claim;
    assert.deepEqual(committed(), ['lease', 'task']);
    assert.deepEqual({ groups: commits.groups, writes: commits.writes }, { groups: 2, writes: 2 });
  });

  it('only one group is chained to a commit: what its callers write in turn waits for the next turn', async () => {
    const first = commits.write(insert('a'));
    mock.timers.tick(0);
    await first;
    await commits.write(insert('b'));
    const third = commits.write(insert('c'));
    assert.equal(await states([third]), 'pending', 'a chain of writes must not keep I/O waiting');
    mock.timers.tick(0);
    await third;
    assert.deepEqual(committed(), ['a', 'b', 'c']);
  });

  it('a failing write rolls back alone: the rest of its group commits', async () => {
    const ok1 = commits.write(insert('a'));
    const failing = commits.write(() => {
      insert('b')();
      insert('a')(); // a UNIQUE conflict after a write of its own: both of its rows must go
    });
    const ok2 = commits.write(insert('c'));
    mock.timers.tick(0);
    await assert.rejects(failing, /UNIQUE/);
    await Promise.all([ok1, ok2]);
    assert.deepEqual(committed(), ['a', 'c']);
  });

  it('a write alone in its group that fails leaves nothing behind and the next group works', async () => {
    const failing = commits.write(() => {
      insert('x')();
      throw new FleetError('FLEETD_ERR_TASK_STATE', 'refused');
    });
    mock.timers.tick(0);
    await assert.rejects(failing, (err: FleetError) => err.code === 'FLEETD_ERR_TASK_STATE');
    assert.equal(db.inTransaction, false);
    const next = commits.write(insert('y'));
    mock.timers.tick(0);
    await next;
    assert.deepEqual(committed(), ['y']);
  });

  it('flush commits what is pending at once (as on close)', async () => {
    const write = commits.write(insert('a'));
    commits.flush();
    await write;
    assert.deepEqual(committed(), ['a']);
  });

  it('turns a full disk or an unavailable database into coded errors, and leaves other errors as they are', () => {
    const full = translateSqliteError(Object.assign(new Error('disk full'), { code: 'SQLITE_FULL' }));
    assert.equal((full as FleetError).code, 'FLEETD_ERR_STORAGE_FULL');
    const busy = translateSqliteError(Object.assign(new Error('busy'), { code: 'SQLITE_BUSY' }));
    assert.equal((busy as FleetError).code, 'FLEETD_ERR_STORE_UNAVAILABLE');
    const other = new Error('something else');
    assert.equal(translateSqliteError(other), other);
  });
});
