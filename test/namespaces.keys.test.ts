import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startTestServer, type Api, type TestServer } from './helpers.js';

const code = (res: { body: any }) => res.body?.error?.code;

describe('keys scoped to namespaces, and the namespaces API', () => {
  let server: TestServer;
  let admin: Api;
  /** An admin key of team-a alone. */
  let adminA: Api;
  let adminAKeyId: string;
  let teamBKeyId: string;

  before(async () => {
    server = await startTestServer();
    admin = server.api;
    const a = await admin.post('/v1/keys', { name: 'team a admin', scope: 'admin', namespaces: ['team-a'] });
    assert.equal(a.status, 201, JSON.stringify(a.body));
    assert.deepEqual(a.body.key.namespaces, ['team-a']);
    adminA = admin.as(a.body.secret);
    adminAKeyId = a.body.key.id;
    const b = await admin.post('/v1/keys', { name: 'team b ci', scope: 'submit', namespaces: ['team-b'] });
    teamBKeyId = b.body.key.id;
  });
  after(() => server.stop());

  it('gives a key made without namespaces every namespace, and makes each namespace a key names known', async () => {
    const all = await admin.post('/v1/keys', { name: 'everything', scope: 'read' });
    assert.deepEqual(all.body.key.namespaces, ['*']);
    const listed = await admin.get('/v1/namespaces');
    assert.equal(listed.status, 200);
    assert.deepEqual(listed.body.items.map((n: any) => n.name), ['default', 'team-a', 'team-b']);
    assert.deepEqual(listed.body.items[1].quotas, { maxQueuedTasks: null, maxTasksPerSecond: null, maxAgents: null });
  });

  it('refuses a key with a bad list of namespaces with 400, and makes nothing', async () => {
    const before = (await admin.get('/v1/keys')).body.items.length;
    for (const namespaces of [[], ['Team A'], ['a/b'], ['*', 'team-a'], ['-x'], ['x'.repeat(64)], 'team-a', [7]]) {
      const res = await admin.post('/v1/keys', { name: 'bad', scope: 'read', namespaces });
      assert.equal(res.status, 400, `namespaces ${JSON.stringify(namespaces)}: ${JSON.stringify(res.body)}`);
      assert.equal(code(res), 'FLEETD_ERR_VALIDATION');
    }
    assert.equal((await admin.get('/v1/keys')).body.items.length, before);
    assert.deepEqual((await admin.get('/v1/namespaces')).body.items.map((n: any) => n.name), ['default', 'team-a', 'team-b']);
  });

  it("lets an admin of some namespaces see and make only keys within them: others' are 404, never 403", async () => {
    const mine = await adminA.post('/v1/keys', { name: 'team a reader', scope: 'read' });
    assert.equal(mine.status, 201);
    assert.deepEqual(mine.body.key.namespaces, ['team-a'], "a key it makes reaches its creator's namespaces unless told");
    const listed = (await adminA.get('/v1/keys')).body.items;
    assert.ok(listed.every((k: any) => k.namespaces.length === 1 && k.namespaces[0] === 'team-a'), JSON.stringify(listed));
    assert.ok(listed.some((k: any) => k.id === adminAKeyId));

    const other = await adminA.post('/v1/keys', { name: 'into b', scope: 'read', namespaces: ['team-b'] });
    assert.equal(other.status, 404);
    assert.equal(code(other), 'FLEETD_ERR_NOT_FOUND');
    const nowhere = await adminA.post('/v1/keys', { name: 'into z', scope: 'read', namespaces: ['no-such-team'] });
    assert.equal(nowhere.status, 404);
    assert.equal(other.body.error.message, nowhere.body.error.message.replace('no-such-team', 'team-b'), 'an existing namespace out of reach answers as one that does not exist');
    const everything = await adminA.post('/v1/keys', { name: 'escalate', scope: 'admin', namespaces: ['*'] });
    assert.equal(everything.status, 403);

    const missing = await adminA.delete('/v1/keys/key_does_not_exist');
    for (const res of [await adminA.delete(`/v1/keys/${teamBKeyId}`), await adminA.post(`/v1/keys/${teamBKeyId}/rotate`, {})]) {
      assert.equal(res.status, 404);
      assert.equal(code(res), code(missing));
      assert.equal(res.body.error.message, missing.body.error.message.replace('key_does_not_exist', teamBKeyId));
    }
    const b = (await admin.get('/v1/keys')).body.items.find((k: any) => k.id === teamBKeyId);
    assert.equal(b.revokedAt, null, 'the other namespace\'s key is untouched');
    assert.equal(b.rotatedAt, null);
  });

  it("shows an admin of some namespaces only those, and leaves quotas, the audit log and the metrics to a key of every namespace", async () => {
    assert.deepEqual((await adminA.get('/v1/namespaces')).body.items.map((n: any) => n.name), ['team-a']);
    assert.equal((await adminA.get('/v1/namespaces/team-a')).status, 200);
    const hidden = await adminA.get('/v1/namespaces/team-b');
    const missing = await adminA.get('/v1/namespaces/nowhere');
    assert.equal(hidden.status, 404);
    assert.equal(code(hidden), code(missing));
    assert.equal((await admin.get('/v1/namespaces/nowhere')).status, 404);
    for (const res of [await adminA.put('/v1/namespaces/team-a', { quotas: { maxAgents: 1000 } }), await adminA.get('/v1/audit'), await adminA.get('/metrics')]) {
      assert.equal(res.status, 403);
      assert.equal(code(res), 'FLEETD_ERR_FORBIDDEN');
    }
  });

  it('takes the namespace from the Fleetd-Namespace header too, with the same 404 out of reach and 400 for a bad name', async () => {
    const named = await admin.request('GET', '/v1/namespaces', undefined, { 'fleetd-namespace': 'team-a' });
    assert.deepEqual(named.body.items.map((n: any) => n.name), ['team-a']);
    const hidden = await adminA.request('GET', '/v1/namespaces', undefined, { 'fleetd-namespace': 'team-b' });
    assert.equal(hidden.status, 404);
    assert.equal(hidden.body.error.message, 'namespace team-b does not exist');
    for (const bad of ['Team-A', 'a b', '*', '']) {
      const res = await admin.request('GET', '/v1/namespaces', undefined, { 'fleetd-namespace': bad });
      assert.equal(res.status, 400, `header ${JSON.stringify(bad)}`);
      assert.equal(res.body.error.details.field, 'fleetd-namespace');
    }
  });

  it("refuses an agent's token that names another namespace in the header with 404, on routes of no namespace of their own too", async () => {
    const agent = await admin.registerAgent(['x'], { namespace: 'team-a' });
    const asAgent = admin.as(agent.token);
    const beat = (namespace?: string) =>
      asAgent.request('POST', `/v1/agents/${agent.id}/heartbeat`, {}, namespace === undefined ? {} : { 'fleetd-namespace': namespace });
    assert.equal((await beat()).status, 200);
    assert.equal((await beat('team-a')).status, 200);
    const other = await beat('team-b');
    assert.equal(other.status, 404);
    assert.equal(other.body.error.message, 'namespace team-b does not exist');
    assert.equal((await beat('Not A Name')).status, 400);
  });

  it('sets quotas, creating the namespace, records who did it, and refuses bad quotas with 400 changing nothing', async () => {
    const set = await admin.put('/v1/namespaces/team-c', { quotas: { maxQueuedTasks: 100, maxTasksPerSecond: 5 } });
    assert.equal(set.status, 200, JSON.stringify(set.body));
    assert.deepEqual(set.body.quotas, { maxQueuedTasks: 100, maxTasksPerSecond: 5, maxAgents: null });
    assert.deepEqual((await admin.get('/v1/namespaces/team-c')).body, set.body);
    for (const body of [{ quotas: { maxAgents: -1 } }, { quotas: { maxAgents: 1.5 } }, { quotas: { maxWidgets: 3 } }, {}, { quotas: {}, extra: 1 }, { quotas: { maxAgents: '3' } }]) {
      const res = await admin.put('/v1/namespaces/team-c', body);
      assert.equal(res.status, 400, JSON.stringify(body));
    }
    assert.equal((await admin.put('/v1/namespaces/Team_C', { quotas: {} })).status, 400);
    assert.deepEqual((await admin.get('/v1/namespaces/team-c')).body, set.body);
    // Null lifts a quota.
    const lifted = await admin.put('/v1/namespaces/team-c', { quotas: { maxQueuedTasks: null, maxTasksPerSecond: 5 } });
    assert.deepEqual(lifted.body.quotas, { maxQueuedTasks: null, maxTasksPerSecond: 5, maxAgents: null });
    const audit = (await admin.get('/v1/audit?action=namespace.updated')).body.items;
    assert.equal(audit.length, 2);
    assert.equal(audit[0].target, 'namespace:team-c');
    assert.deepEqual(audit[0].details.quotas, lifted.body.quotas);
  });

  it('never lets the last admin key of every namespace be revoked, however many scoped admins remain', async () => {
    const keys = (await admin.get('/v1/keys')).body.items;
    const allAdmins = keys.filter((k: any) => k.scope === 'admin' && k.revokedAt === null && k.namespaces[0] === '*');
    assert.equal(allAdmins.length, 1);
    const res = await admin.delete(`/v1/keys/${allAdmins[0].id}`);
    assert.equal(res.status, 409);
    assert.equal(code(res), 'FLEETD_ERR_KEY_STATE');
    // A scoped admin key is not that key: it may go.
    assert.equal((await admin.delete(`/v1/keys/${adminAKeyId}`)).status, 200);
    assert.equal((await adminA.get('/v1/namespaces')).status, 401);
  });
});
