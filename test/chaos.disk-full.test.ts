import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, openSync, rmSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { FleetClient } from '../src/client/index.js';
import type { SqliteDriver } from '../src/store/sqlite/driver.js';
import { type Api, type Reply, eventually, kill9, startFleetdProcess, startTestServer, tempDir, within } from './helpers.js';

/**
 * A disk that can fill up under fleetd. Where this machine lets the test mount (root, as in CI), a
 * real 16 MiB tmpfs holds the data directory of a real `fleetd start` process and a filler file
 * takes the rest of its space. Where mounting is impossible, SQLite's `PRAGMA max_page_count` on an
 * in-process server makes SQLite itself answer SQLITE_FULL, through the same code path.
 */
interface FullableDisk {
  kind: string;
  api: Api;
  fill(): void;
  free(): void;
  /** Crashes fleetd (kill -9 where it is a process) and starts it again on the same data. */
  restart(): Promise<Api>;
  /** True while fleetd runs: a full disk must not bring it down. */
  alive(): boolean;
  destroy(): Promise<void>;
}

async function tmpfsDisk(): Promise<FullableDisk | undefined> {
  const mountPoint = tempDir('fleetd-disk-');
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=16m', 'tmpfs', mountPoint], { stdio: 'ignore' });
  } catch {
    rmSync(mountPoint, { recursive: true, force: true });
    return undefined;
  }
  const dataDir = join(mountPoint, 'data');
  const filler = join(mountPoint, 'filler');
  let fleetd = await startFleetdProcess(dataDir);
  return {
    kind: 'a full tmpfs',
    api: fleetd.api,
    fill() {
      // Write until the filesystem refuses: then not one more page fits.
      const fd = openSync(filler, 'a');
      const chunk = Buffer.alloc(64 * 1024);
      try {
        for (;;) writeSync(fd, chunk);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
      } finally {
        closeSync(fd);
      }
    },
    free: () => unlinkSync(filler),
    async restart() {
      await kill9(fleetd.child);
      fleetd = await startFleetdProcess(dataDir);
      return fleetd.api;
    },
    alive: () => fleetd.child.exitCode === null && fleetd.child.signalCode === null,
    async destroy() {
      await kill9(fleetd.child);
      execFileSync('umount', [mountPoint]);
      rmSync(mountPoint, { recursive: true, force: true });
    },
  };
}

async function pageLimitedDisk(): Promise<FullableDisk> {
  let server = await startTestServer();
  const db = () => (server.driver as SqliteDriver).database.db;
  return {
    kind: 'SQLite max_page_count (mounting is not possible here)',
    api: server.api,
    fill: () => db().pragma(`max_page_count = ${db().pragma('page_count', { simple: true })}`),
    free: () => db().pragma('max_page_count = 4294967294'),
    async restart() {
      await server.stop({ keepData: true });
      server = await startTestServer({ dataDir: server.dataDir });
      return server.api;
    },
    alive: () => true,
    destroy: () => server.stop(),
  };
}

describe('a full disk', { timeout: 120_000 }, () => {
  it('answers writes with 507, keeps serving reads, loses nothing acknowledged and recovers when space returns', async (t) => {
    const disk = (await tmpfsDisk()) ?? (await pageLimitedDisk());
    t.diagnostic(`disk: ${disk.kind}`);
    try {
      const { api } = disk;
      const agent = await api.registerAgent(['disk']);
      const acknowledged = new Set<number>();
      for (let i = 0; i < 20; i++) acknowledged.add((await api.submit({ type: 'disk', payload: { i } })).id);
      const leased = await api.claim(agent.id, 5);
      assert.equal(leased.length, 5);

      disk.fill();
      // A few writes may still fit in pages SQLite holds already; then the disk is full for certain.
      const payload = { text: 'x'.repeat(8 * 1024) };
      let refused: Reply | undefined;
      for (let i = 0; i < 500 && !refused; i++) {
        const res = await api.post('/v1/tasks', { type: 'disk', payload });
        if (res.status === 201) acknowledged.add(res.body.task.id);
        else refused = res;
      }
      assert.ok(refused, 'the disk filled up');
      assert.equal(refused.status, 507);
      assert.equal(refused.body.error.code, 'FLEETD_ERR_STORAGE_FULL');
      assert.match(refused.body.error.message, /full/);

      // Every kind of write is refused clearly, and none of them changes anything.
      const counted = (await api.get('/v1/stats')).body.tasks.byType.disk;
      const batch = await api.post('/v1/tasks/batch', { tasks: Array.from({ length: 50 }, () => ({ type: 'disk', payload })) });
      assert.equal(batch.status, 507);
      assert.equal(batch.body.error.code, 'FLEETD_ERR_STORAGE_FULL');
      const concurrent = await Promise.all(Array.from({ length: 20 }, () => api.post('/v1/tasks', { type: 'disk', payload })));
      assert.deepEqual(new Set(concurrent.map((r) => r.status)), new Set([507]));

      // Reads carry on.
      const stats = await api.get('/v1/stats');
      assert.equal(stats.status, 200);
      assert.deepEqual(stats.body.tasks.byType.disk, counted, 'refused writes changed nothing');
      assert.equal((await api.get(`/v1/tasks/${leased[0].id}`)).body.status, 'leased');
      const list = await api.get('/v1/tasks?type=disk&limit=1000');
      assert.equal(list.status, 200);
      assert.equal(list.body.items.length, acknowledged.size);
      assert.ok(disk.alive(), 'fleetd is still running');

      // Space returns: fleetd takes writes again by itself, no restart.
      disk.free();
      await eventually(async () => (await api.post('/v1/tasks', { type: 'disk', payload: { after: true } })).status === 201, 10_000, 'a write after space returned');
      for (const task of leased) {
        const done = await api.post(`/v1/tasks/${task.id}/complete`, { agentId: agent.id, result: { ok: true } });
        assert.equal(done.status, 200, 'the leases held through the full disk');
      }
      assert.equal((await api.post('/v1/agents', { name: 'late', capabilities: ['disk'] })).status, 201);

      const restarted = await disk.restart();
      const after = await restarted.get('/v1/tasks?type=disk&limit=1000');
      const present = new Map<number, string>(after.body.items.map((task: { id: number; status: string }) => [task.id, task.status]));
      assert.deepEqual([...acknowledged].filter((id) => !present.has(id)), [], 'acknowledged tasks lost');
      for (const task of leased) assert.equal(present.get(task.id), 'completed');
      const recount = (await restarted.get('/v1/stats')).body.tasks.byType.disk;
      assert.equal(recount.queued + recount.completed, present.size, 'counters equal a recount');
      t.diagnostic(`${acknowledged.size} tasks acknowledged before the disk filled up`);
    } finally {
      await disk.destroy();
    }
  });

  it('an SDK agent whose completion meets a full disk reports it again once space returns', async () => {
    const disk = await pageLimitedDisk();
    const agent = new FleetClient({ url: disk.api.base, apiKey: disk.api.key }).agent({ name: 'patient', capabilities: ['disk-sdk'] });
    try {
      let handled: () => void = () => {};
      const handledOnce = new Promise<void>((resolve) => (handled = resolve));
      await agent.work(async () => {
        disk.fill();
        handled();
        // A result that needs pages a full database has no room for.
        return { text: 'z'.repeat(256 * 1024) };
      });
      const task = await disk.api.submit({ type: 'disk-sdk' });
      await within(handledOnce, 30_000, 'the task handled');
      await new Promise((r) => setTimeout(r, 300));
      assert.equal((await disk.api.get(`/v1/tasks/${task.id}`)).body.status, 'leased', 'the completion was refused while the disk was full');
      disk.free();
      await eventually(async () => (await disk.api.get(`/v1/tasks/${task.id}`)).body.status === 'completed', 20_000, 'the completion to be reported again');
      const done = (await disk.api.get(`/v1/tasks/${task.id}`)).body;
      assert.equal(done.attempts, 1, 'completed by the first attempt, not run again');
      assert.equal(done.agentId, agent.id);
      assert.equal(done.result.text.length, 256 * 1024);
    } finally {
      await agent.stop();
      await disk.destroy();
    }
  });
});
