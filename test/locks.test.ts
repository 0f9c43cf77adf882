import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { nextEvent, startTestServer, type TestServer } from './helpers.js';

describe('locks', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(() => server.stop());

  it('takes every resource or none, and a conflict names who holds which resource', async () => {
    const { api } = server;
    const alice = await api.registerAgent(['dev']);
    const bob = await api.registerAgent(['dev']);
    const held = await api.post('/v1/locks', { agentId: alice.id, resources: ['src/a.ts', 'src/b.ts'], ttlMs: 60_000, description: 'refactor' });
    assert.equal(held.status, 200);
    assert.deepEqual(held.body.resources, ['src/a.ts', 'src/b.ts']);
    const clash = await api.post('/v1/locks', { agentId: bob.id, resources: ['src/c.ts', 'src/b.ts'], ttlMs: 60_000 });
    assert.equal(clash.status, 409);
    assert.equal(clash.body.error.code, 'FLEETD_ERR_LOCK_CONFLICT');
    assert.deepEqual(
      clash.body.error.details.conflicts.map((c: any) => [c.resource, c.agentId, c.lockId]),
      [['src/b.ts', alice.id, held.body.id]],
    );
    // All or nothing: src/c.ts was not taken by the failed request.
    const c = await api.post('/v1/locks', { agentId: bob.id, resources: ['src/c.ts'], ttlMs: 60_000 });
    assert.equal(c.status, 200);
    const list = (await api.get(`/v1/locks?agentId=${alice.id}`)).body.items;
    assert.deepEqual(list.map((l: any) => l.id), [held.body.id]);
  });

  it('releases on DELETE, only by its holder when the holder is named', async () => {
    const { api } = server;
    const alice = await api.registerAgent(['dev']);
    const bob = await api.registerAgent(['dev']);
    const lock = (await api.post('/v1/locks', { agentId: alice.id, resources: ['docs/x.md'], ttlMs: 60_000 })).body;
    const wrong = await api.delete(`/v1/locks/${lock.id}?agentId=${bob.id}`);
    assert.equal(wrong.status, 403);
    assert.equal((await api.delete(`/v1/locks/${lock.id}?agentId=${alice.id}`)).status, 200);
    assert.equal((await api.delete(`/v1/locks/${lock.id}`)).status, 404);
    assert.equal((await api.post('/v1/locks', { agentId: bob.id, resources: ['docs/x.md'], ttlMs: 1_000 })).status, 200);
  });

  it('expires at its TTL', async () => {
    const { api } = server;
    const agent = await api.registerAgent(['dev']);
    const lock = (await api.post('/v1/locks', { agentId: agent.id, resources: ['tmp/ttl'], ttlMs: 200 })).body;
    const released = await nextEvent(server, 'lock.released', (e) => e.lock.id === lock.id);
    assert.equal(released.reason, 'expired');
    assert.equal((await api.get(`/v1/locks/${lock.id}`)).status, 404);
  });

  it('rejects a lock for an unknown agent', async () => {
    const res = await server.api.post('/v1/locks', { agentId: 'nobody', resources: ['x'], ttlMs: 1000 });
    assert.equal(res.status, 404);
    assert.equal(res.body.error.code, 'FLEETD_ERR_NOT_FOUND');
  });
});
