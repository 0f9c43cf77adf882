import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startTestServer, type TestServer } from './helpers.js';

describe('concurrent claims', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(() => server.stop());

  it('50 agents claiming from 2,000 tasks complete every task exactly once, never two holders at a time', async () => {
    const { api } = server;
    const total = 2_000; // 8 claims of 5 per agent on average: enough to interleave all 50
    // Leases long enough that none expires even on a crawling machine: a second holder would be a bug, not a rescue.
    const tasks = Array.from({ length: total }, (_, i) => ({ type: 'work', payload: { i }, priority: i % 3, leaseMs: 3_600_000 }));
    for (let i = 0; i < total; i += 1_000) {
      assert.equal((await api.post('/v1/tasks/batch', { tasks: tasks.slice(i, i + 1_000) })).status, 201);
    }
    const agents = await Promise.all(Array.from({ length: 50 }, () => api.registerAgent(['work'])));
    const completedBy = new Map<number, string>();
    const holding = new Map<number, string>();
    let doubleLease = 0;
    await Promise.all(
      agents.map(async (agent) => {
        for (;;) {
          const claimed = await api.claim(agent.id, 5);
          if (claimed.length === 0) return;
          for (const t of claimed) {
            if (holding.has(t.id)) doubleLease++;
            holding.set(t.id, agent.id);
          }
          await Promise.all(
            claimed.map(async (t) => {
              const res = await api.post(`/v1/tasks/${t.id}/complete`, { agentId: agent.id, result: { by: agent.id } });
              assert.equal(res.status, 200, JSON.stringify(res.body));
              holding.delete(t.id);
              assert.ok(!completedBy.has(t.id), `task ${t.id} completed twice`);
              completedBy.set(t.id, agent.id);
            }),
          );
        }
      }),
    );
    assert.equal(doubleLease, 0);
    assert.equal(completedBy.size, total);
    const stats = (await api.get('/v1/stats')).body;
    assert.equal(stats.tasks.byStatus.completed, total);
    assert.equal(stats.tasks.byStatus.queued, 0);
    assert.equal(stats.tasks.byStatus.leased, 0);
    // Work was spread over the fleet, not taken by a few.
    assert.ok(new Set(completedBy.values()).size >= 25);
  });
});
