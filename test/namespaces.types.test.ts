import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { drivers, withServer } from './helpers.js';

/**
 * Task types per namespace, over real HTTP: a type's policy, pauses, budget and usage are its
 * namespace's. A key of one namespace sets its own, and team-b's tasks of the same type name go out
 * as if team-a's limits did not exist.
 */
for (const [driver, store] of Object.entries(drivers)) {
  describe(`task types per namespace (${driver})`, { timeout: 60_000 }, () => {
    it("a key of team-a sets team-a's policy and pause; team-b's tasks of that type go regardless", async () => {
      await withServer(store(), async ({ api }) => {
        const teamA = api.as((await api.post('/v1/keys', { name: 'a', scope: 'admin', namespaces: ['team-a'] })).body.secret);
        const agentA = await teamA.registerAgent(['llm']);
        const agentB = await api.registerAgent(['llm'], { namespace: 'team-b' });
        for (let i = 0; i < 3; i++) {
          await teamA.submit({ type: 'llm', payload: i });
          await api.submit({ type: 'llm', payload: i, namespace: 'team-b' });
        }

        const set = await teamA.put('/v1/types/llm', { maxConcurrency: 1 });
        assert.equal(set.status, 200, JSON.stringify(set.body));
        assert.deepEqual([set.body.namespace, set.body.policy.maxConcurrency], ['team-a', 1]);
        assert.equal((await teamA.claim(agentA.id, 10)).length, 1, "team-a's limit holds team-a's tasks");
        assert.equal((await api.claim(agentB.id, 10)).length, 3, "team-b's tasks of llm go: team-a's limit is not theirs");

        const [a, b] = [(await teamA.get('/v1/types/llm')).body, (await api.get('/v1/types/llm?namespace=team-b')).body];
        assert.deepEqual([a.namespace, a.heldBack.maxConcurrency, a.counts.leased], ['team-a', 2, 1]);
        assert.deepEqual([b.namespace, b.policy, b.heldBack.total, b.counts.leased], ['team-b', null, 0, 3]);

        // A pause of team-b's llm holds team-b's and none of team-a's.
        const paused = await api.post('/v1/types/llm/pause?namespace=team-b', { reason: 'their provider is down' });
        assert.equal(paused.status, 200, JSON.stringify(paused.body));
        assert.deepEqual([paused.body.namespace, paused.body.paused], ['team-b', true]);
        await api.submit({ type: 'llm', payload: 'later', namespace: 'team-b' });
        assert.equal((await api.claim(agentB.id, 10)).length, 0);
        assert.equal((await teamA.get('/v1/types/llm')).body.paused, false);
        await teamA.put('/v1/types/llm', {});
        assert.equal((await teamA.claim(agentA.id, 10)).length, 2, "team-a's tasks go once its own limit is lifted, team-b's pause notwithstanding");

        // One list, one entry per namespace and type, for a key of every namespace.
        const listed = (await api.get('/v1/types')).body.items.filter((t: any) => t.type === 'llm');
        assert.deepEqual(listed.map((t: any) => [t.namespace, t.paused]), [['team-a', false], ['team-b', true]]);
        // A type named in a namespace where it has neither tasks nor a policy is not found there.
        assert.equal((await api.post('/v1/types/llm/pause?namespace=team-c', {})).status, 404);
        // A key of several namespaces names the one whose type it means.
        const both = api.as((await api.post('/v1/keys', { name: 'ab', scope: 'admin', namespaces: ['team-a', 'team-b'] })).body.secret);
        const unnamed = await both.put('/v1/types/llm', { maxConcurrency: 5 });
        assert.equal(unnamed.status, 400, JSON.stringify(unnamed.body));
        assert.equal(unnamed.body.error.details.field, 'namespace');
        assert.equal((await both.put('/v1/types/llm?namespace=team-b', { maxConcurrency: 5 })).body.namespace, 'team-b');
      });
    });

    it("spends each namespace's budget on its own usage, and shows each its own in /v1/stats", async () => {
      await withServer(store(), async ({ api }) => {
        const teamA = api.as((await api.post('/v1/keys', { name: 'a', scope: 'admin', namespaces: ['team-a'] })).body.secret);
        const teamB = api.as((await api.post('/v1/keys', { name: 'b', scope: 'admin', namespaces: ['team-b'] })).body.secret);
        const agentA = await teamA.registerAgent(['llm']);
        const agentB = await teamB.registerAgent(['llm']);
        assert.equal((await teamA.put('/v1/types/llm', { budget: { tokensPerHour: 100 } })).status, 200);
        assert.equal((await teamB.put('/v1/types/llm', { budget: { tokensPerHour: 100 } })).status, 200);
        for (const team of [teamA, teamB]) for (let i = 0; i < 2; i++) await team.submit({ type: 'llm', payload: i });

        // team-a spends its whole budget; team-b spends a little of its own.
        const [first] = await teamA.claim(agentA.id, 1);
        assert.equal((await teamA.post(`/v1/tasks/${first.id}/complete`, { agentId: agentA.id, usage: { inputTokens: 150, costUsd: 1 } })).status, 200);
        const [theirs] = await teamB.claim(agentB.id, 1);
        assert.equal((await teamB.post(`/v1/tasks/${theirs.id}/complete`, { agentId: agentB.id, usage: { inputTokens: 20, costUsd: 0.1 } })).status, 200);

        assert.equal((await teamA.claim(agentA.id, 1)).length, 0, "team-a's spent budget holds team-a's next task");
        assert.equal((await teamA.get('/v1/types/llm')).body.heldBack.budget, 1);
        assert.equal((await teamB.claim(agentB.id, 1)).length, 1, "team-b's budget is its own: 20 of 100 spent");

        const usageOf = async (api_: typeof api) => (await api_.get('/v1/types/llm')).body.usage.hour.inputTokens;
        assert.deepEqual([await usageOf(teamA), await usageOf(teamB)], [150, 20]);
        const statsOf = async (api_: typeof api) => (await api_.get('/v1/stats')).body.usage.types.map((t: any) => [t.type, t.hour.inputTokens]);
        assert.deepEqual(await statsOf(teamA), [['llm', 150]]);
        assert.deepEqual(await statsOf(teamB), [['llm', 20]]);
        assert.deepEqual(await statsOf(api), [['llm', 170]], 'a key of every namespace sees the sum');
      });
    });
  });
}
