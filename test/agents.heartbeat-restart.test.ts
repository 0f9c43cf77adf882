import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { describe, it } from 'node:test';
import { eventually, kill9, startFleetdProcess, tempDir } from './helpers.js';
import { dropSchema, TEST_DATABASE_URL, uniqueSchema } from './store/postgres.js';

/**
 * Heartbeats that do not write, with real processes and signals: an online agent's heartbeat is
 * answered from memory and reaches the store with the next flush; a fleetd killed with -9 loses
 * the beats it held, and after its restart every agent still has a full stale interval to show up.
 */
for (const driver of ['sqlite', 'postgres'] as const) {
  describe(`heartbeats that do not write (${driver})`, { timeout: 120_000 }, () => {
    it('keeps beats in memory, flushes them together, and gives agents a stale interval after a kill -9', async () => {
      const dataDir = tempDir();
      const schema = driver === 'postgres' ? uniqueSchema('fleetd_beats') : undefined;
      const env: Record<string, string> = {
        FLEETD_AGENT_STALE_MS: '3000',
        FLEETD_AGENT_OFFLINE_MS: '60000',
        FLEETD_AGENT_SEEN_FLUSH_MS: '750',
        ...(schema ? { FLEETD_DATABASE_URL: TEST_DATABASE_URL, FLEETD_DATABASE_SCHEMA: schema } : {}),
      };
      let fleetd = await startFleetdProcess(dataDir, env);
      try {
        const agent = await fleetd.api.registerAgent(['beat']);
        const registered = (await fleetd.api.get(`/v1/agents/${agent.id}`)).body.lastHeartbeatAt;
        const asAgent = fleetd.api.as(agent.token);
        let answered = '';
        for (let i = 0; i < 5; i++) {
          await new Promise((r) => setTimeout(r, 5));
          const beat = await asAgent.post(`/v1/agents/${agent.id}/heartbeat`);
          assert.equal(beat.status, 200);
          assert.equal(beat.body.status, 'online');
          assert.ok(beat.body.lastHeartbeatAt > registered, 'the answer carries the beat');
          answered = beat.body.lastHeartbeatAt;
        }
        // The store learns the last beat with the next flush, not with each beat.
        await eventually(async () => (await fleetd.api.get(`/v1/agents/${agent.id}`)).body.lastHeartbeatAt === answered, 10_000, 'the flush');

        // A silent agent and an agent that beat just before the crash: both stored long before the restart.
        const silent = await fleetd.api.registerAgent(['beat']);
        await asAgent.post(`/v1/agents/${agent.id}/heartbeat`);
        await kill9(fleetd.child);
        await new Promise((r) => setTimeout(r, 3_500));
        fleetd = await startFleetdProcess(dataDir, env);
        for (const id of [agent.id, silent.id]) {
          const after = (await fleetd.api.get(`/v1/agents/${id}`)).body;
          assert.equal(after.status, 'online', 'no agent goes stale for the time the server was down');
        }
        // One that shows up in time stays online; one that does not goes stale once the interval has passed.
        const againAsAgent = fleetd.api.as(agent.token);
        const keepBeating = setInterval(() => void againAsAgent.post(`/v1/agents/${agent.id}/heartbeat`).catch(() => {}), 500);
        try {
          await eventually(async () => (await fleetd.api.get(`/v1/agents/${silent.id}`)).body.status === 'stale', 20_000, 'the silent agent to go stale');
          assert.equal((await fleetd.api.get(`/v1/agents/${agent.id}`)).body.status, 'online', 'the agent that kept beating');
        } finally {
          clearInterval(keepBeating);
        }
      } finally {
        await kill9(fleetd.child);
        rmSync(dataDir, { recursive: true, force: true });
        if (schema) {
          await dropSchema(schema);
        }
      }
    });
  });
}
