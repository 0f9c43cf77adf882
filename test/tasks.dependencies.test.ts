import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { drivers, nextEvent, withServer } from './helpers.js';

for (const [driver, store] of Object.entries(drivers)) {
  describe(`dependencies and children over HTTP (${driver})`, { timeout: 60_000 }, () => {
    it('a join waits, is released when its dependencies complete, and its agent gets their results', () =>
      withServer(store(), async (server) => {
        const { api } = server;
        const agent = await api.registerAgent(['step', 'join'], { maxConcurrency: 10 });
        const parent = await api.submit({ type: 'plan' });
        const children = (await api.post('/v1/tasks/batch', { tasks: [1, 2, 3].map((n) => ({ type: 'step', payload: { n }, parentId: parent.id })) })).body.items.map(
          (i: { task: { id: number } }) => i.task,
        );
        const join = await api.submit({ type: 'join', dependsOn: children.map((c: { id: number }) => c.id), parentId: parent.id });
        assert.equal(join.status, 'waiting');
        assert.equal(join.dependenciesPending, 3);

        const listed = await api.get(`/v1/tasks/${parent.id}/children?limit=2`);
        assert.equal(listed.status, 200);
        const more = await api.get(`/v1/tasks/${parent.id}/children?limit=2&cursor=${encodeURIComponent(listed.body.nextCursor)}`);
        assert.deepEqual([...listed.body.items, ...more.body.items].map((t: { id: number }) => t.id), [...children.map((c: { id: number }) => c.id), join.id]);

        const waiting = await api.get('/v1/tasks?status=waiting');
        assert.deepEqual(waiting.body.items.map((t: { id: number }) => t.id), [join.id]);
        assert.equal((await api.get('/v1/stats')).body.tasks.byStatus.waiting, 1);

        const leased = await api.claim(agent.id, 10);
        assert.deepEqual(leased.map((t) => t.id), children.map((c: { id: number }) => c.id), 'the waiting join is not handed out');
        const released = nextEvent(server, 'task.released', (e) => e.task.id === join.id);
        for (const t of leased) {
          const done = await api.post(`/v1/tasks/${t.id}/complete`, { agentId: agent.id, result: { doubled: t.payload.n * 2 } });
          assert.equal(done.status, 200);
        }
        assert.equal((await released).task.status, 'queued');
        const [claimed] = await api.claim(agent.id, 1);
        assert.equal(claimed.id, join.id);
        assert.deepEqual(
          claimed.dependencies,
          leased.map((t) => ({ id: t.id, status: 'completed', result: { doubled: t.payload.n * 2 }, error: null })),
        );
        assert.deepEqual((await api.get(`/v1/tasks/${join.id}`)).body.dependencies, claimed.dependencies);
      }));

    it('a dead dependency cancels the waiting task; with onDependencyFailure run it is queued with the failure listed', () =>
      withServer(store(), async (server) => {
        const { api } = server;
        const agent = await api.registerAgent(['step']);
        const dep = await api.submit({ type: 'step' });
        const cancels = await api.submit({ type: 'after', dependsOn: [dep.id] });
        const runs = await api.submit({ type: 'after', dependsOn: [dep.id], onDependencyFailure: 'run' });
        const [t] = await api.claim(agent.id, 1);
        const cancelled = nextEvent(server, 'task.cancelled', (e) => e.task.id === cancels.id);
        await api.post(`/v1/tasks/${t.id}/fail`, { agentId: agent.id, error: { message: 'no' }, retryable: false });
        await cancelled;
        const after = (await api.get(`/v1/tasks/${cancels.id}`)).body;
        assert.equal(after.status, 'cancelled');
        assert.equal(after.error.code, 'FLEETD_ERR_DEPENDENCY_FAILED');
        const ran = (await api.get(`/v1/tasks/${runs.id}`)).body;
        assert.equal(ran.status, 'queued');
        assert.deepEqual(ran.dependencies, [{ id: dep.id, status: 'dead', result: null, error: { message: 'no' } }]);
      }));

    it('cancelling a waiting task works, and the dependency completing later changes nothing', () =>
      withServer(store(), async ({ api }) => {
        const agent = await api.registerAgent(['step']);
        const dep = await api.submit({ type: 'step' });
        const join = await api.submit({ type: 'join', dependsOn: [dep.id] });
        assert.equal((await api.delete(`/v1/tasks/${join.id}`)).body.status, 'cancelled');
        const [t] = await api.claim(agent.id, 1);
        await api.post(`/v1/tasks/${t.id}/complete`, { agentId: agent.id });
        assert.equal((await api.get(`/v1/tasks/${join.id}`)).body.status, 'cancelled');
      }));

    it('refuses bad links with a clear 400 and stores nothing', () =>
      withServer(store(), async ({ api }) => {
        const dep = await api.submit({ type: 'step' });
        const cases: [string, unknown, string][] = [
          ['unknown dependency', { type: 'join', dependsOn: [dep.id, 987_654] }, 'dependsOn'],
          ['unknown parent', { type: 'child', parentId: 987_654 }, 'parentId'],
          ['more than 1,000 dependencies', { type: 'join', dependsOn: Array.from({ length: 1001 }, (_, i) => i + 1) }, 'dependsOn'],
          ['a dependency that is not an id', { type: 'join', dependsOn: ['one'] }, 'dependsOn'],
          ['an unknown failure mode', { type: 'join', dependsOn: [dep.id], onDependencyFailure: 'ignore' }, 'onDependencyFailure'],
        ];
        for (const [what, body, field] of cases) {
          const res = await api.post('/v1/tasks', body);
          assert.equal(res.status, 400, what);
          assert.equal(res.body.error.code, 'FLEETD_ERR_VALIDATION', what);
          assert.match(JSON.stringify(res.body.error), new RegExp(field), what);
        }
        const batch = await api.post('/v1/tasks/batch', { tasks: [{ type: 'ok' }, { type: 'join', dependsOn: [987_654] }] });
        assert.equal(batch.status, 400);
        assert.equal(batch.body.error.details.index, 1);
        assert.equal((await api.get('/v1/tasks')).body.items.length, 1, 'only the first task exists');
        const missing = await api.get('/v1/tasks/987654/children');
        assert.equal(missing.status, 404);
        assert.equal(missing.body.error.code, 'FLEETD_ERR_NOT_FOUND');
      }));
  });
}
