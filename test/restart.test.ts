import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { describe, it } from 'node:test';
import { eventually, kill9, startFleetdProcess, startTestServer, tempDir } from './helpers.js';

describe('durability', () => {
  it('a restart on the same data directory keeps every task, lease and lock', async () => {
    const first = await startTestServer();
    const { api } = first;
    let setUp;
    try {
      const agent = await api.registerAgent(['keep']);
      const queued = await api.submit({ type: 'keep', payload: { n: 1 }, priority: 3 });
      const leased = await api.submit({ type: 'keep', payload: { n: 2 }, priority: 9, leaseMs: 60_000 });
      const later = await api.submit({ type: 'keep', delayMs: 60_000 });
      assert.deepEqual((await api.claim(agent.id)).map((t) => t.id), [leased.id]);
      const lock = (await api.post('/v1/locks', { agentId: agent.id, resources: ['repo/main'], ttlMs: 60_000 })).body;
      const statsBefore = (await api.get('/v1/stats')).body.tasks.byStatus;
      setUp = { agent, queued, leased, later, lock, statsBefore };
    } finally {
      await first.stop({ keepData: true });
    }
    const { agent, queued, leased, later, lock, statsBefore } = setUp;

    const second = await startTestServer({ dataDir: first.dataDir });
    try {
      const api2 = second.api;
      assert.equal((await api2.get(`/v1/tasks/${queued.id}`)).body.status, 'queued');
      assert.equal((await api2.get(`/v1/tasks/${later.id}`)).body.status, 'scheduled');
      const lease = (await api2.get(`/v1/tasks/${leased.id}`)).body;
      assert.equal(lease.status, 'leased');
      assert.equal(lease.agentId, agent.id);
      assert.deepEqual((await api2.get('/v1/stats')).body.tasks.byStatus, statsBefore);
      const other = await api2.registerAgent(['keep']);
      const clash = await api2.post('/v1/locks', { agentId: other.id, resources: ['repo/main'], ttlMs: 1_000 });
      assert.equal(clash.status, 409);
      assert.equal(clash.body.error.details.conflicts[0].lockId, lock.id);
      // The lease survived: its holder completes the task.
      const done = await api2.post(`/v1/tasks/${leased.id}/complete`, { agentId: agent.id, result: 'ok' });
      assert.equal(done.status, 200);
    } finally {
      await second.stop();
    }
  });

  it('kill -9 in the middle of submits loses no acknowledged task', async () => {
    const dataDir = tempDir();
    const start = () => startFleetdProcess(dataDir);
    try {
      const { child, api } = await start();
      const acknowledged: number[] = [];
      let stop = false;
      let writers: Promise<void>[] = [];
      try {
        writers = Array.from({ length: 20 }, async (_, w) => {
          for (let i = 0; !stop; i++) {
            try {
              const res = await api.post('/v1/tasks', { type: 'crash', payload: { w, i } });
              if (res.status === 201) acknowledged.push(res.body.task.id);
            } catch {
              return; // the connection died with the server
            }
          }
        });
        await eventually(() => acknowledged.length >= 500, 30_000, '500 acknowledged submits');
      } finally {
        await kill9(child);
        stop = true;
        await Promise.all(writers);
      }

      const restarted = await start();
      try {
        const present = new Set<number>();
        const res = await fetch(`${restarted.api.base}/v1/tasks/export?type=crash`, { headers: { authorization: `Bearer ${restarted.api.key}` } });
        for (const line of (await res.text()).trim().split('\n')) present.add(JSON.parse(line).id);
        const lost = acknowledged.filter((id) => !present.has(id));
        assert.deepEqual(lost, [], `${lost.length} acknowledged tasks lost`);
        const stats = (await restarted.api.get('/v1/stats')).body;
        assert.equal(stats.tasks.byType.crash.queued, present.size, 'counters equal a recount after the crash');
      } finally {
        await kill9(restarted.child);
      }
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
