import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { twoNodes } from './cluster/node-process.js';

/** Two `fleetd start` processes on one PostgreSQL schema obey one type's limit together. */
describe('a type policy across two fleetd nodes', { timeout: 120_000 }, () => {
  const cluster = twoNodes();

  it('never leases more than maxConcurrency across both nodes, and a completion on one node wakes a claim waiting on the other', async () => {
    const { a, b } = cluster;
    const type = 'cluster-limited';
    assert.equal((await a.api.request('PUT', `/v1/types/${type}`, { maxConcurrency: 3 })).status, 200);
    await b.api.post('/v1/tasks/batch', { tasks: Array.from({ length: 12 }, (_, i) => ({ type, payload: { i } })) });
    const agents = await Promise.all([a, b, a, b].map((node) => node.api.registerAgent([type], { maxConcurrency: 10 })));
    const nodes = [a, b, a, b];
    // Everyone claims at once, on both nodes.
    const first = await Promise.all(agents.map((agent, i) => nodes[i].api.claim(agent.id, 10)));
    const held = first.flatMap((tasks, i) => tasks.map((t: any) => ({ task: t, agent: agents[i], node: nodes[i] })));
    assert.equal(held.length, 3, `leased across the cluster: ${held.length}`);
    const seen = await b.api.get(`/v1/types/${type}`);
    assert.equal(seen.body.counts.leased, 3);
    assert.equal(seen.body.heldBack.maxConcurrency, 9);

    // An agent on B waits; a completion on A frees a slot and B's claim gets the next task.
    const waiter = agents[1];
    const waiting = b.api.claim(waiter.id, 10, 30_000);
    await new Promise((r) => setTimeout(r, 500));
    const done = held.find((h) => h.node === a) ?? held[0];
    const started = Date.now();
    assert.equal((await done.node.api.post(`/v1/tasks/${done.task.id}/complete`, { agentId: done.agent.id })).status, 200);
    const woken = await waiting;
    assert.equal(woken.length, 1, 'one freed slot, one task');
    assert.ok(Date.now() - started < 20_000, 'woken by the completion on the other node, not by the wait running out');
    const after = await a.api.get(`/v1/types/${type}`);
    assert.equal(after.body.counts.leased, 3);
    assert.equal(after.body.counts.completed, 1);
  });
});
