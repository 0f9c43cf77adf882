import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { repeatCheck } from '../src/core/rules/idempotency.js';
import { openSqlite, type SqliteDriver } from '../src/store/sqlite/driver.js';
import type { TaskInsertParams } from '../src/store/store.js';
import { toTask, type TaskRow } from '../src/store/rows.js';
import { T0, payloadOf, task } from './store/harness.js';

/**
 * SQLite writes a row again whole at every update: a payload longer than INLINE_PAYLOAD_MAX is kept
 * in task_payloads, written once with its task and deleted with it, so that a lease or a completion
 * does not write it again. (That every read still answers it whole is the conformance suite's
 * KeepsALongPayloadWholeThroughEveryChange, on both drivers.)
 */
describe('SQLite: long payloads outside their tasks rows', () => {
  let dir: string;
  let driver: SqliteDriver;
  const agentId = 'agent-long';
  const prompt = { prompt: 'an agent would read this prompt; '.repeat(500) };

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'fleetd-payloads-'));
    driver = openSqlite({ dataDir: dir });
    await driver.store.agentCreateMany([{ id: agentId, namespace: 'default', name: agentId, capabilities: ['long', 'short'], labels: {}, maxConcurrency: 50, tokenHash: 'hash', now: T0 }]);
  });
  afterEach(async () => {
    await driver?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const insert = (tasks: TaskInsertParams[]) => driver.store.taskInsertMany({ tasks, now: T0, onRepeat: repeatCheck('task', tasks) });
  const count = (sql: string) => driver.database.db.prepare(sql).pluck().get() as number;

  it('WritesALongPayloadOnce: leasing and completing 20 tasks of 16 KB adds less to the WAL than their payloads', async () => {
    await insert(Array.from({ length: 20 }, () => task('long', { payload: prompt })));
    driver.database.db.pragma('wal_checkpoint(TRUNCATE)');
    const { tasks } = await driver.store.taskClaim({ agentId, max: 20, now: T0 });
    assert.equal(tasks.length, 20);
    // In one turn, so in one commit, as an agent's batched completions arrive.
    await Promise.all(tasks.map((t) => driver.store.taskComplete({ id: t.id, agentId, result: { ok: true }, now: T0 + 1 })));
    const walBytes = statSync(join(dir, 'fleetd.db-wal')).size;
    const payloadBytes = 20 * JSON.stringify(prompt).length;
    // Kept in the rows, each payload would be written twice more: by its lease and by its completion.
    assert.ok(walBytes < payloadBytes, `the WAL grew by ${walBytes} bytes for ${payloadBytes} bytes of payloads`);
  });

  it('KeepsOnlyLongPayloadsOutside, and deletes them with their tasks', async () => {
    const [long, short] = (await insert([task('long', { payload: prompt }), task('short', { payload: { n: 1 } })])).map((r) => r.task);
    assert.equal(count(`SELECT count(*) FROM tasks WHERE payload = '' AND id = ${long.id}`), 1);
    assert.equal(count(`SELECT count(*) FROM tasks WHERE payload = '{"n":1}' AND id = ${short.id}`), 1);
    assert.equal(count('SELECT count(*) FROM task_payloads'), 1);
    await driver.store.taskClaim({ agentId, max: 2, now: T0 });
    for (const t of [long, short]) await driver.store.taskComplete({ id: t.id, agentId, result: null, now: T0 + 1 });
    assert.equal(await driver.store.taskDeleteFinished({ before: T0 + 2, limit: 10 }), 2);
    assert.equal(count('SELECT count(*) FROM task_payloads'), 0, 'retention deleted the payload with its task');
  });

  it('RefusesARowReadWithoutItsPayload: a task is never answered with the mark in place of its payload', async () => {
    const [{ task: t }] = await insert([task('long', { payload: prompt })]);
    // A statement that forgot task_payloads (not made with taskRows) reads the row's '' mark.
    const row = driver.database.db.prepare('SELECT * FROM tasks WHERE id = ?').get(t.id) as TaskRow;
    assert.equal(row.payload, '');
    assert.throws(() => toTask(row), new RegExp(`task ${t.id} was read without its payload`));
    assert.deepEqual(payloadOf(toTask(driver.database.withPayload(row))), prompt);
  });

  it('ReadsALongPayloadAnEarlierReleaseKeptInItsRow', async () => {
    const [t] = (await insert([task('long', { payload: prompt })])).map((r) => r.task);
    // As a store written before migration 22 holds it: in the row, nothing in task_payloads.
    driver.database.db.prepare('UPDATE tasks SET payload = ? WHERE id = ?').run(JSON.stringify(prompt), t.id);
    driver.database.db.prepare('DELETE FROM task_payloads WHERE task_id = ?').run(t.id);
    assert.deepEqual(payloadOf((await driver.store.taskGet({ id: t.id }))!), prompt);
    const { tasks } = await driver.store.taskClaim({ agentId, max: 1, now: T0 });
    assert.deepEqual(payloadOf(tasks[0]), prompt);
  });
});
