import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SqliteDatabase } from '../src/store/sqlite/database.js';

/** Rows read as arrays and built with one shape must be the rows better-sqlite3 itself gives. */
describe('SqliteDatabase.rows', () => {
  it('GivesTheSameRowsAsBetterSqlite3, for every column, a later column of a name winning', () => {
    const d = new SqliteDatabase({ dataDir: ':memory:' });
    try {
      d.db.exec(`CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, score REAL, blob BLOB, missing TEXT);
        INSERT INTO t (name, score, blob, missing) VALUES ('a', 1.5, x'00ff', NULL), ('b', -2, NULL, 'here');`);
      for (const sql of ['SELECT * FROM t ORDER BY id', 'SELECT t.*, u.name, 7 AS id FROM t JOIN t AS u ON u.id = t.id ORDER BY t.id']) {
        assert.deepEqual(d.rows(sql).all(), d.db.prepare(sql).all());
        assert.deepEqual(d.rows(sql).get(), d.db.prepare(sql).get());
      }
      assert.equal(d.rows('SELECT * FROM t WHERE id = ?').get(99), undefined);
      const updated = d.rows("UPDATE t SET name = 'c' WHERE id = @id RETURNING *").get({ id: 2 });
      assert.deepEqual(updated, { id: 2, name: 'c', score: -2, blob: null, missing: 'here' });
    } finally {
      d.close();
    }
  });
});
