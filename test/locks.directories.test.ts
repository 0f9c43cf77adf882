import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { drivers, startTestServer, stopAndDrop, type TestServer } from './helpers.js';

for (const [driver, store] of Object.entries(drivers)) {
  describe(`locks for coding agents (${driver})`, { timeout: 120_000 }, () => {
    let server: TestServer;
    before(async () => {
      server = await startTestServer(store());
    });
    after(async () => {
      if (server) await stopAndDrop(server);
    });

    it('a directory lock clashes with the files below it and they with it', async () => {
      const { api } = server;
      const alice = await api.registerAgent(['dev']);
      const bob = await api.registerAgent(['dev']);
      const dir = await api.post('/v1/locks', { agentId: alice.id, resources: ['repo1/src/'], ttlMs: 60_000 });
      assert.equal(dir.status, 200);
      const file = await api.post('/v1/locks', { agentId: bob.id, resources: ['repo1/src/app.ts'], ttlMs: 60_000 });
      assert.equal(file.status, 409);
      assert.deepEqual(file.body.error.details.conflicts.map((c: any) => c.resource), ['repo1/src/']);
      assert.equal((await api.post('/v1/locks', { agentId: bob.id, resources: ['repo1/srcs/app.ts', 'repo1/README.md'], ttlMs: 60_000 })).status, 200);
      const wide = await api.post('/v1/locks', { agentId: bob.id, resources: ['repo1/'], ttlMs: 60_000 });
      assert.equal(wide.status, 409, 'a wider directory clashes with the locks below it');
    });

    it('renews a lock for its holder only; a lapsed lock cannot be renewed', async () => {
      const { api } = server;
      const alice = await api.registerAgent(['dev']);
      const bob = await api.registerAgent(['dev']);
      const lock = (await api.post('/v1/locks', { agentId: alice.id, resources: ['repo2/a.ts'], ttlMs: 1_000 })).body;
      const asBob = api.as(bob.token);
      const refused = await asBob.post(`/v1/locks/${lock.id}/renew`, { agentId: bob.id, ttlMs: 60_000 });
      assert.equal(refused.status, 403);
      const renewed = await api.as(alice.token).post(`/v1/locks/${lock.id}/renew`, { agentId: alice.id, ttlMs: 60_000 });
      assert.equal(renewed.status, 200);
      assert.ok(Date.parse(renewed.body.expiresAt) > Date.parse(lock.expiresAt) + 30_000);
      const short = (await api.post('/v1/locks', { agentId: alice.id, resources: ['repo2/b.ts'], ttlMs: 1 })).body;
      await new Promise((r) => setTimeout(r, 50));
      assert.equal((await api.post(`/v1/locks/${short.id}/renew`, { ttlMs: 60_000 })).status, 404);
      assert.equal((await api.post('/v1/locks/no-such-lock/renew', { ttlMs: 1000 })).status, 404);
      assert.equal((await api.post(`/v1/locks/${lock.id}/renew`, { ttlMs: 0 })).status, 400);
    });

    it('a waiting request gets the resources when they free, in the order the requests came', async () => {
      const { api } = server;
      const [holder, first, second] = await Promise.all([0, 1, 2].map(() => api.registerAgent(['dev'])));
      const held = (await api.post('/v1/locks', { agentId: holder.id, resources: ['repo3/src/'], ttlMs: 60_000 })).body;
      const order: string[] = [];
      const one = api.post('/v1/locks', { agentId: first.id, resources: ['repo3/src/a.ts', 'repo3/b.ts'], ttlMs: 60_000, waitMs: 20_000 }).then((r) => (order.push('first'), r));
      await new Promise((r) => setTimeout(r, 300));
      const two = api.post('/v1/locks', { agentId: second.id, resources: ['repo3/b.ts'], ttlMs: 60_000, waitMs: 20_000 }).then((r) => (order.push('second'), r));
      await new Promise((r) => setTimeout(r, 300));
      assert.deepEqual(order, [], 'the second waits behind the first although b.ts is free');
      // Nor does a request that does not wait pass them: its 409 says how many wait ahead for b.ts.
      const impatient = await api.post('/v1/locks', { agentId: holder.id, resources: ['repo3/b.ts'], ttlMs: 60_000 });
      assert.equal(impatient.status, 409);
      assert.equal(impatient.body.error.code, 'FLEETD_ERR_LOCK_CONFLICT');
      assert.equal(impatient.body.error.details.waitingAhead, 2);
      assert.deepEqual(impatient.body.error.details.conflicts, []);
      assert.equal((await api.delete(`/v1/locks/${held.id}`)).status, 200);
      const got1 = await one;
      assert.equal(got1.status, 200);
      assert.deepEqual(got1.body.resources, ['repo3/src/a.ts', 'repo3/b.ts']);
      assert.equal((await api.delete(`/v1/locks/${got1.body.id}`)).status, 200);
      const got2 = await two;
      assert.equal(got2.status, 200);
      assert.deepEqual(order, ['first', 'second']);
    });

    it('a wait that runs out answers 409 with the holders, and takes nothing', async () => {
      const { api } = server;
      const holder = await api.registerAgent(['dev']);
      const waiter = await api.registerAgent(['dev']);
      await api.post('/v1/locks', { agentId: holder.id, resources: ['repo4/x.ts'], ttlMs: 60_000 });
      const started = Date.now();
      const res = await api.post('/v1/locks', { agentId: waiter.id, resources: ['repo4/y.ts', 'repo4/x.ts'], ttlMs: 60_000, waitMs: 500 });
      assert.equal(res.status, 409);
      assert.equal(res.body.error.code, 'FLEETD_ERR_LOCK_CONFLICT');
      assert.deepEqual(res.body.error.details.conflicts.map((c: any) => c.agentId), [holder.id]);
      assert.ok(Date.now() - started >= 450);
      assert.deepEqual((await api.get(`/v1/locks?agentId=${waiter.id}`)).body.items, [], 'all or nothing: y.ts was not taken');
    });

    it('refuses empty names and .. segments, changing nothing', async () => {
      const { api } = server;
      const agent = await api.registerAgent(['dev']);
      for (const resources of [[''], ['repo5/../etc/passwd'], ['..'], ['repo5/ok.ts', 'a/..']]) {
        const res = await api.post('/v1/locks', { agentId: agent.id, resources, ttlMs: 1000 });
        assert.equal(res.status, 400, JSON.stringify(resources));
        assert.equal(res.body.error.code, 'FLEETD_ERR_VALIDATION');
      }
      assert.equal((await api.post('/v1/locks', { agentId: agent.id, resources: ['repo5/a'], ttlMs: 1000, waitMs: -1 })).status, 400);
      assert.deepEqual((await api.get(`/v1/locks?agentId=${agent.id}`)).body.items, []);
      assert.equal((await api.post('/v1/locks', { agentId: agent.id, resources: ['repo5/..a/b..'], ttlMs: 1000 })).status, 200, 'dots inside a name are fine');
    });

    it('a task with locks goes out only when they are free, holds them while leased and frees them with its lease', async () => {
      const { api } = server;
      const a = await api.registerAgent(['edit'], { maxConcurrency: 5 });
      const b = await api.registerAgent(['edit'], { maxConcurrency: 5 });
      const first = await api.submit({ type: 'edit', locks: ['repo6/src/'] });
      const second = await api.submit({ type: 'edit', locks: ['repo6/src/main.ts'] });
      assert.deepEqual(second.locks, ['repo6/src/main.ts']);
      const [got] = await api.claim(a.id, 5);
      assert.equal(got.id, first.id);
      const held = (await api.get(`/v1/locks?agentId=${a.id}`)).body.items;
      assert.deepEqual(held.map((l: any) => l.resources), [['repo6/src/']]);
      // A hand-taken lock on the file clashes with the task's directory too.
      assert.equal((await api.post('/v1/locks', { agentId: b.id, resources: ['repo6/src/x.ts'], ttlMs: 60_000 })).status, 409);
      const waiting = api.claim(b.id, 5, 30_000);
      await new Promise((r) => setTimeout(r, 300));
      const started = Date.now();
      assert.equal((await api.post(`/v1/tasks/${first.id}/complete`, { agentId: a.id })).status, 200);
      const woken = await waiting;
      assert.deepEqual(woken.map((t: any) => t.id), [second.id]);
      assert.ok(Date.now() - started < 15_000, 'handed out when the lease ended, not at the end of the wait');
      assert.equal(woken[0].attempts, 1);
      assert.deepEqual((await api.get(`/v1/locks?agentId=${a.id}`)).body.items, [], "the first task's lock went with its lease");
      assert.deepEqual((await api.get(`/v1/locks?agentId=${b.id}`)).body.items.map((l: any) => l.resources), [['repo6/src/main.ts']]);
    });

    it('refuses bad task locks: .. segments, empty names, more than 100', async () => {
      const { api } = server;
      for (const locks of [['repo7/../x'], [''], Array.from({ length: 101 }, (_, i) => `repo7/f${i}`)]) {
        const res = await api.post('/v1/tasks', { type: 'edit-bad', locks });
        assert.equal(res.status, 400, JSON.stringify(locks).slice(0, 60));
        assert.equal(res.body.error.code, 'FLEETD_ERR_VALIDATION');
      }
      assert.equal((await api.get('/v1/tasks?type=edit-bad')).body.items.length, 0);
    });
  });
}
