import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { describe, it } from 'node:test';
import { type Api, kill9, startFleetdProcess, tempDir } from './helpers.js';

describe('crash', () => {
  it('kill -9 at random moments with submits, claims and completions under way: nothing acknowledged is lost, nothing completes twice', async () => {
    const dataDir = tempDir();
    const acknowledged = new Set<number>();
    const completions = new Map<number, number>();
    const runFleet = (api: Api, agents: string[], until: () => boolean, submit: boolean) => {
      const submitters = submit
        ? Array.from({ length: 2 }, async () => {
            while (!until()) {
              const res = await api.post('/v1/tasks/batch', {
                tasks: Array.from({ length: 10 }, () => ({ type: 'chaos', leaseMs: 1_000 })),
              });
              if (res.status === 201) for (const item of res.body.items) acknowledged.add(item.task.id);
            }
          })
        : [];
      const workers = agents.map(async (agentId) => {
        while (!until()) {
          const claim = await api.post('/v1/tasks/claim', { agentId, max: 5, waitMs: 200 });
          if (claim.status !== 200) continue;
          await Promise.all(
            claim.body.tasks.map(async (t: any) => {
              const res = await api.post(`/v1/tasks/${t.id}/complete`, { agentId, result: { ok: true } });
              if (res.status === 200) completions.set(t.id, (completions.get(t.id) ?? 0) + 1);
            }),
          );
        }
      });
      // The server dies under them: a failed request ends that loop.
      return Promise.allSettled([...submitters, ...workers]);
    };
    const registerAgents = async (api: Api) => {
      const res = await api.post('/v1/agents/batch', { agents: Array.from({ length: 10 }, (_, i) => ({ name: `chaos-${i}`, capabilities: ['chaos'] })) });
      return res.body.items.map((r: any) => r.agent.id as string);
    };

    try {
      for (let round = 0; round < 3; round++) {
        const { child, api } = await startFleetdProcess(dataDir);
        const agents = await registerAgents(api);
        let dead = false;
        const running = runFleet(api, agents, () => dead, true);
        // Once work is flowing (however slow the machine), at a random moment.
        const flowing = completions.size + 20;
        const giveUp = Date.now() + 30_000;
        while (completions.size < flowing && Date.now() < giveUp) await new Promise((r) => setTimeout(r, 10));
        await new Promise((r) => setTimeout(r, Math.random() * 1_000));
        await kill9(child);
        dead = true;
        await running;
      }
      const completedBeforeDrain = [...completions.keys()];
      assert.ok(acknowledged.size > 0 && completedBeforeDrain.length > 0, 'the crashes hit a fleet at work');

      const { child, api } = await startFleetdProcess(dataDir);
      try {
        const agents = await registerAgents(api);
        const deadline = Date.now() + 30_000;
        let drained = false;
        const check = (async () => {
          while (!drained && Date.now() < deadline) {
            // Tasks whose submit was cut off by a crash may exist unacknowledged: drain them all.
            const byStatus = (await api.get('/v1/stats')).body.tasks.byType.chaos ?? {};
            drained = !byStatus.scheduled && !byStatus.queued && !byStatus.leased;
            await new Promise((r) => setTimeout(r, 100));
          }
        })();
        await runFleet(api, agents, () => drained || Date.now() > deadline, false);
        await check;

        const stored = new Map<number, string>();
        const res = await fetch(`${api.base}/v1/tasks/export?type=chaos`, { headers: { authorization: `Bearer ${api.key}` } });
        for (const line of (await res.text()).trim().split('\n')) {
          const t = JSON.parse(line);
          stored.set(t.id, t.status);
        }
        const lost = [...acknowledged].filter((id) => !stored.has(id));
        assert.deepEqual(lost, [], 'acknowledged tasks lost');
        const unfinished = [...acknowledged].filter((id) => stored.get(id) !== 'completed');
        assert.deepEqual(unfinished, [], 'acknowledged tasks never completed');
        const twice = [...completions].filter(([, n]) => n > 1);
        assert.deepEqual(twice, [], 'tasks completed twice');
        process.stdout.write(`# chaos: ${acknowledged.size} tasks acknowledged, ${completedBeforeDrain.length} completed before the last crash\n`);
        for (const id of completedBeforeDrain) assert.equal(stored.get(id), 'completed', `completion of ${id} was acknowledged but lost`);
      } finally {
        await kill9(child);
      }
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
