import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { FleetdConfig } from '../src/config.js';
import type { PipelineSetup } from '../src/pipelines/pipelines.js';
import { finishedRun, startPipelineServer } from './fake-llm.js';
import { drivers, withServer, type TestServer } from './helpers.js';

const setup: PipelineSetup = {
  functions: { words: (ctx) => String((ctx.input as { text?: unknown } | null)?.text ?? '').split(/\s+/).length },
  pipelines: [{ name: 'count', steps: [{ name: 'words', kind: 'code', fn: 'words' }] }],
};

/** A pipeline server on `store` with these retention settings (withServer: stopped and dropped after). */
const withRetention = (store: Partial<FleetdConfig>, retention: Partial<FleetdConfig>, body: (server: TestServer) => Promise<void>) =>
  withServer({ ...store, ...retention }, body, (config) => startPipelineServer(setup, config));

/** Submits `total` tasks and completes the first `finished` of them, one after the other. */
async function tasksFinishing(server: TestServer, total: number, finished: number) {
  const { api } = server;
  const agent = await api.registerAgent(['keep'], { maxConcurrency: 100 });
  await api.post('/v1/tasks/batch', { tasks: Array.from({ length: total }, (_, i) => ({ type: 'keep', payload: { i } })) });
  const claimed = await api.claim(agent.id, finished);
  const done: any[] = [];
  for (const t of claimed) done.push((await api.post(`/v1/tasks/${t.id}/complete`, { agentId: agent.id })).body);
  return done;
}

for (const [driver, store] of Object.entries(drivers)) {
  describe(`retention of finished tasks and runs (${driver})`, () => {
    it('keeps at most retentionMaxTasks finished tasks, the most recently finished, and every unfinished one', async () => {
      await withRetention(store(), { retentionMs: 0, retentionMaxTasks: 5 }, async (server) => {
        const done = await tasksFinishing(server, 12, 8);
        const result = await server.fleet.timers.cleaner.runOnce(server.fleet.now());
        assert.equal(result.more, false);
        const stats = (await server.api.get('/v1/stats')).body.tasks.byStatus;
        assert.deepEqual({ completed: stats.completed, queued: stats.queued }, { completed: 5, queued: 4 });
        const kept = (await server.api.get('/v1/tasks?status=completed')).body.items;
        const keptIds = new Set(kept.map((t: any) => t.id));
        const gone = done.filter((t) => !keptIds.has(t.id));
        assert.equal(gone.length, 3);
        const oldestKept = Math.min(...kept.map((t: any) => Date.parse(t.completedAt)));
        for (const t of gone) assert.ok(Date.parse(t.completedAt) <= oldestKept, `task ${t.id} finished after one that was kept`);
        for (const t of gone) assert.equal((await server.api.get(`/v1/tasks/${t.id}`)).status, 404);
      });
    });

    it('deletes finished tasks older than retentionMs, and only those', async () => {
      await withRetention(store(), { retentionMs: 60_000 }, async (server) => {
        await tasksFinishing(server, 6, 4);
        await server.fleet.timers.cleaner.runOnce(server.fleet.now());
        assert.equal((await server.api.get('/v1/stats')).body.tasks.byStatus.completed, 4, 'deleted before their time');
        await server.fleet.timers.cleaner.runOnce(server.fleet.now() + 60_001);
        const stats = (await server.api.get('/v1/stats')).body.tasks.byStatus;
        assert.deepEqual({ completed: stats.completed, queued: stats.queued }, { completed: 0, queued: 2 });
      });
    });

    it('keeps at most runRetentionMaxRuns finished runs, with their steps, and deletes runs older than runRetentionMs', async () => {
      await withRetention(store(), { runRetentionMaxRuns: 2, runRetentionMs: 60_000 }, async (server) => {
        const ids: number[] = [];
        for (let i = 0; i < 4; i++) {
          const started = await server.api.post('/v1/pipelines/count/runs', { input: { text: `run number ${i}` } });
          ids.push((await finishedRun(server.api, started.body.run.id, 60_000)).id);
        }
        await server.pipelines.cleaner.runOnce(server.fleet.now());
        const left = (await server.api.get('/v1/pipelines/runs')).body.items.map((r: any) => r.id);
        assert.deepEqual(left, ids.slice(2).reverse());
        assert.equal((await server.api.get(`/v1/pipelines/runs/${ids[0]}`)).status, 404);

        await server.pipelines.cleaner.runOnce(server.fleet.now() + 60_001);
        assert.deepEqual((await server.api.get('/v1/pipelines/runs')).body.items, []);
      });
    });
  });
}
