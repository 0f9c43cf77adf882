import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { migrate, migrations } from '../src/store/sqlite/migrations.js';
import { taskList } from '../src/store/lists.js';
import { whereOf } from '../src/store/keyset.js';
import { CLAIM_READS } from '../src/store/sqlite/types.js';

/**
 * Upgrading a database written before namespaces: migration 17 builds pipeline_runs, pipeline_steps
 * and pipeline_versions anew, so what they held must come through whole, in `default`.
 */
describe('sqlite migrations: pipeline runs, versions and cases into namespaces', () => {
  it('keeps the runs (ids, steps, keys), versions and cases of a database written before, in default', () => {
    const db = new Database(':memory:');
    try {
      db.pragma('foreign_keys = ON');
      db.exec('CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)');
      for (const m of migrations.filter((m) => m.version <= 14)) {
        db.exec(m.sql);
        db.prepare('INSERT INTO schema_migrations VALUES (?, ?, ?)').run(m.version, m.name, 0);
      }
      db.exec(`
        INSERT INTO pipeline_runs (id, pipeline, status, input, idempotency_key, request_hash, created_at, updated_at, owner, lease_expires_at, pipeline_version)
          VALUES (7, 'triage', 'running', '{"text":"x"}', 'k', 'h', 1, 2, 'node-a', 99, 1), (9, 'triage', 'completed', 'null', NULL, NULL, 3, 4, NULL, NULL, NULL);
        INSERT INTO pipeline_steps (run_id, position, name, status, attempts, output, approval) VALUES
          (7, 0, 'a', 'completed', 1, '"A"', NULL), (7, 1, 'b', 'waiting', 1, NULL, '{"prompt":"ok?"}'), (9, 0, 'a', 'completed', 1, '1', NULL);
        INSERT INTO pipeline_versions (name, version, definition, created_at) VALUES ('triage', 1, '{"steps":[]}', 5);
        INSERT INTO cases (id, title, centroid, size, created_at, updated_at, version) VALUES (3, 'bins', '[1,0]', 1, 6, 6, 1);
        INSERT INTO case_members (run_id, case_id, similarity, text, added_at) VALUES (9, 3, 1, 'bins', 6);
      `);

      migrate(db);

      const runs = db.prepare('SELECT id, namespace, pipeline, status, idempotency_key, owner, lease_expires_at, pipeline_version FROM pipeline_runs ORDER BY id').all();
      assert.deepEqual(runs, [
        { id: 7, namespace: 'default', pipeline: 'triage', status: 'running', idempotency_key: 'k', owner: 'node-a', lease_expires_at: 99, pipeline_version: 1 },
        { id: 9, namespace: 'default', pipeline: 'triage', status: 'completed', idempotency_key: null, owner: null, lease_expires_at: null, pipeline_version: null },
      ]);
      assert.deepEqual(db.prepare('SELECT run_id, name, status, output, approval FROM pipeline_steps ORDER BY run_id, position').all(), [
        { run_id: 7, name: 'a', status: 'completed', output: '"A"', approval: null },
        { run_id: 7, name: 'b', status: 'waiting', output: null, approval: '{"prompt":"ok?"}' },
        { run_id: 9, name: 'a', status: 'completed', output: '1', approval: null },
      ]);
      assert.deepEqual(db.prepare('SELECT namespace, name, version FROM pipeline_versions').all(), [{ namespace: 'default', name: 'triage', version: 1 }]);
      assert.deepEqual(db.prepare('SELECT id, namespace FROM cases').all(), [{ id: 3, namespace: 'default' }]);
      assert.deepEqual(db.prepare('SELECT pipeline, status, n FROM pipeline_run_counts ORDER BY status').all(), [
        { pipeline: 'triage', status: 'completed', n: 1 },
        { pipeline: 'triage', status: 'running', n: 1 },
      ]);

      // The rebuilt tables keep their rules: steps go with their run, counts follow, keys are per namespace.
      db.prepare("UPDATE pipeline_runs SET status = 'failed' WHERE id = 7").run();
      db.prepare('DELETE FROM pipeline_runs WHERE id = 9').run();
      assert.deepEqual(db.prepare('SELECT DISTINCT run_id FROM pipeline_steps').all(), [{ run_id: 7 }]);
      assert.deepEqual(db.prepare('SELECT status, n FROM pipeline_run_counts WHERE n > 0').all(), [{ status: 'failed', n: 1 }]);
      db.prepare("INSERT INTO pipeline_runs (namespace, pipeline, status, input, idempotency_key, created_at, updated_at) VALUES ('team-a', 'p', 'queued', 'null', 'k', 1, 1)").run();
      assert.throws(
        () => db.prepare("INSERT INTO pipeline_runs (namespace, pipeline, status, input, idempotency_key, created_at, updated_at) VALUES ('team-a', 'p', 'queued', 'null', 'k', 1, 1)").run(),
        /UNIQUE/,
      );
      assert.throws(() => db.prepare("INSERT INTO pipeline_steps (run_id, position, name, status) VALUES (1000, 0, 'a', 'pending')").run(), /FOREIGN KEY/);
      assert.deepEqual(db.pragma('foreign_key_check'), []);
    } finally {
      db.close();
    }
  });

  it("brings a type's policy, pauses, turns, rate-window starts and usage of a database written before into default", () => {
    const db = new Database(':memory:');
    try {
      db.exec('CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)');
      for (const m of migrations.filter((m) => m.version <= 18)) {
        db.exec(m.sql);
        db.prepare('INSERT INTO schema_migrations VALUES (?, ?, ?)').run(m.version, m.name, 0);
      }
      db.exec(`
        INSERT INTO type_policies VALUES ('llm', '{"maxConcurrency":2}', 5);
        INSERT INTO type_pauses VALUES ('llm', '', NULL, 'down', 6), ('llm', 'k', 99, NULL, 7);
        INSERT INTO type_starts VALUES ('llm', 'k', 8);
        INSERT INTO fair_keys VALUES ('k', 3.5), ('j', 2);
        UPDATE fair_clock SET clock = 3;
        INSERT INTO task_usage VALUES ('llm', 'k', 9, 10, 20, 0.5, 'm');
      `);

      migrate(db);

      assert.deepEqual(db.prepare('SELECT * FROM type_policies').all(), [{ namespace: 'default', type: 'llm', policy: '{"maxConcurrency":2}', updated_at: 5 }]);
      assert.deepEqual(db.prepare('SELECT namespace, type, ckey, until, reason FROM type_pauses ORDER BY ckey').all(), [
        { namespace: 'default', type: 'llm', ckey: '', until: null, reason: 'down' },
        { namespace: 'default', type: 'llm', ckey: 'k', until: 99, reason: null },
      ]);
      assert.deepEqual(db.prepare('SELECT namespace, type, ckey, at FROM type_starts').all(), [{ namespace: 'default', type: 'llm', ckey: 'k', at: 8 }]);
      assert.deepEqual(db.prepare('SELECT * FROM fair_keys ORDER BY ckey').all(), [
        { namespace: 'default', ckey: 'j', pass: 2 },
        { namespace: 'default', ckey: 'k', pass: 3.5 },
      ]);
      assert.deepEqual(db.prepare('SELECT * FROM fair_clocks').all(), [{ namespace: 'default', clock: 3 }]);
      assert.deepEqual(db.prepare('SELECT namespace, type, ckey, input_tokens, model FROM task_usage').all(), [
        { namespace: 'default', type: 'llm', ckey: 'k', input_tokens: 10, model: 'm' },
      ]);
      // The same type, key and pause in another namespace are rows of their own.
      db.exec(`INSERT INTO type_policies VALUES ('team-b', 'llm', '{}', 1); INSERT INTO type_pauses VALUES ('team-b', 'llm', '', NULL, NULL, 1);
        INSERT INTO fair_keys VALUES ('team-b', 'k', 0)`);
      assert.throws(() => db.exec("INSERT INTO type_policies VALUES ('team-b', 'llm', '{}', 2)"), /UNIQUE|PRIMARY KEY/);
    } finally {
      db.close();
    }
  });

  it("lists a namespace's tasks from the index of tasks outside default, not by reading every task", () => {
    const db = new Database(':memory:');
    try {
      migrate(db);
      const plan = (namespaces: string[]) => {
        const q = taskList({ namespaces, limit: 50 });
        const { conditions, values } = whereOf(q.where);
        const sql = `EXPLAIN QUERY PLAN ${q.select} WHERE ${conditions.join(' AND ')} ORDER BY id DESC LIMIT 50`;
        return (db.prepare(sql).all(...values) as { detail: string }[]).map((r) => r.detail).join('; ');
      };
      assert.match(plan(['team-a']), /tasks_outside_default/);
      assert.match(plan(['team-a', 'team-b']), /tasks_outside_default/);
      assert.doesNotMatch(plan(['default', 'team-a']), /tasks_outside_default/, 'default is not in it');
    } finally {
      db.close();
    }
  });
});

describe('sqlite: what a claim reads while a rule is in force', () => {
  it('reads keyed and locking tasks through their partial indexes, not every task of a status or a type', () => {
    const db = new Database(':memory:');
    try {
      migrate(db);
      const plan = (sql: string, ...values: unknown[]) =>
        (db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(...values) as { detail: string }[]).map((r) => r.detail).join('; ');
      // Without INDEXED BY, SQLite picks tasks_by_type here: every task of the type, done ones too.
      assert.match(plan(CLAIM_READS.leasedKeyed, 'llm'), /USING INDEX tasks_leased_keyed/);
      assert.doesNotMatch(plan(CLAIM_READS.leasedKeyed, 'llm'), /tasks_by_type/);
      const anyRule = plan(CLAIM_READS.anyRule);
      assert.match(anyRule, /tasks_queued_keyed/);
      assert.match(anyRule, /tasks_queued_locking/);
      assert.doesNotMatch(anyRule, /tasks_by_status/);
    } finally {
      db.close();
    }
  });
});
