import assert from 'node:assert/strict';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { eventually, kill9, startFleetdProcess, tempDir, type Api } from './helpers.js';
import { runFleetd } from './cli-run.js';

/** Submits batches of tasks until stopped, recording the id of every task whose submit was acknowledged. */
function writeLoad(api: Api, writers: number) {
  const acknowledged: number[] = [];
  let stopped = false;
  const loop = async (w: number) => {
    for (let n = 0; !stopped; n++) {
      const res = await api.post('/v1/tasks/batch?return=minimal', {
        tasks: Array.from({ length: 20 }, (_, i) => ({ type: 'backup-load', payload: { w, n, i } })),
      });
      if (res.status !== 201) throw new Error(`submit: ${res.status} ${JSON.stringify(res.body)}`);
      for (const item of res.body.items) acknowledged.push(item.task.id);
    }
  };
  const running = Promise.all(Array.from({ length: writers }, (_, w) => loop(w)));
  return {
    acknowledged,
    async stop() {
      stopped = true;
      await running;
    },
  };
}

function storedIds(file: string): Set<number> {
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    assert.deepEqual(db.pragma('integrity_check', { simple: true }), 'ok');
    return new Set(db.prepare('SELECT id FROM tasks').pluck().all() as number[]);
  } finally {
    db.close();
  }
}

describe('fleetd backup and restore (real processes)', () => {
  it('takes a consistent backup under write load that restores with every task acknowledged before it', async () => {
    const dataDir = tempDir();
    const restoredDir = tempDir();
    const backupFile = join(tempDir('fleetd-backup-'), 'fleetd-backup.db');
    const server = await startFleetdProcess(dataDir);
    const load = writeLoad(server.api, 4);
    let restored: Awaited<ReturnType<typeof startFleetdProcess>> | undefined;
    try {
      await eventually(() => load.acknowledged.length >= 2_000, 60_000, 'tasks before the backup');
      const beforeBackup = [...load.acknowledged];
      const backup = await runFleetd(['backup', '--to', backupFile, '--data-dir', dataDir]);
      const afterBackup = load.acknowledged.length;
      await load.stop();
      assert.equal(backup.code, 0, backup.stderr);
      assert.match(backup.stdout, /integrity ok/);
      // Writes went on while the backup ran: it was taken under load, not in a pause.
      assert.ok(afterBackup > beforeBackup.length, 'no submit was acknowledged while the backup ran');

      const inBackup = storedIds(backupFile);
      const missing = beforeBackup.filter((id) => !inBackup.has(id));
      assert.deepEqual(missing, [], `${missing.length} acknowledged tasks missing from the backup`);

      await kill9(server.child);
      const restore = await runFleetd(['restore', backupFile, '--data-dir', restoredDir]);
      assert.equal(restore.code, 0, restore.stderr);
      assert.equal(storedIds(join(restoredDir, 'fleetd.db')).size, inBackup.size);
      // The restored store serves: same admin key, the same tasks.
      restored = await startFleetdProcess(restoredDir, { FLEETD_ADMIN_KEY: server.adminKey });
      const stats = (await restored.api.get('/v1/stats')).body;
      assert.equal(stats.tasks.byStatus.queued, inBackup.size);
      const last = beforeBackup.at(-1)!;
      assert.equal((await restored.api.get(`/v1/tasks/${last}`)).body.type, 'backup-load');
    } finally {
      await load.stop().catch(() => {});
      await kill9(server.child);
      if (restored) await kill9(restored.child);
      for (const dir of [dataDir, restoredDir, join(backupFile, '..')]) rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses to restore under a running server, and keeps a store it replaces', async () => {
    const dataDir = tempDir();
    const backupDir = tempDir('fleetd-backup-');
    const backupFile = join(backupDir, 'b.db');
    const server = await startFleetdProcess(dataDir);
    try {
      await server.api.submit({ type: 'kept' });
      assert.equal((await runFleetd(['backup', '--to', backupFile, '--data-dir', dataDir])).code, 0);
      const again = await runFleetd(['backup', '--to', backupFile, '--data-dir', dataDir]);
      assert.equal(again.code, 1);
      assert.match(again.stderr, /exists already/);

      await server.api.submit({ type: 'after-backup' });
      const refused = await runFleetd(['restore', backupFile, '--data-dir', dataDir]);
      assert.equal(refused.code, 1);
      assert.match(refused.stderr, /is in use.*stop the server/);
      assert.equal((await server.api.get('/v1/stats')).body.tasks.byStatus.queued, 2);

      await kill9(server.child);
      const restored = await runFleetd(['restore', backupFile, '--data-dir', dataDir]);
      assert.equal(restored.code, 0, restored.stderr);
      const aside = readdirSync(dataDir).find((f) => f.startsWith('fleetd.db.replaced-'));
      assert.ok(aside, 'the replaced store was not kept');
      assert.equal(storedIds(join(dataDir, aside)).size, 2);
      assert.equal(storedIds(join(dataDir, 'fleetd.db')).size, 1);
      assert.ok(!existsSync(join(dataDir, 'fleetd.db-wal')));

      const notABackup = await runFleetd(['restore', join(dataDir, 'nothing.db'), '--data-dir', dataDir]);
      assert.equal(notABackup.code, 1);
      assert.match(notABackup.stderr, /does not exist/);
    } finally {
      await kill9(server.child);
      rmSync(dataDir, { recursive: true, force: true });
      rmSync(backupDir, { recursive: true, force: true });
    }
  });
});
