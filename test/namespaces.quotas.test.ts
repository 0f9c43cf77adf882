import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startTestServer, type Api, type TestServer } from './helpers.js';

const code = (res: { body: any }) => res.body?.error?.code;

/** Each namespace's quotas refuse with 429 and Retry-After, change nothing, leave other namespaces alone, and let go once use falls. */
describe('namespace quotas', () => {
  let server: TestServer;
  let admin: Api;
  let teamA: Api;

  before(async () => {
    server = await startTestServer();
    admin = server.api;
    teamA = admin.as((await admin.post('/v1/keys', { name: 'team a', scope: 'admin', namespaces: ['team-a'] })).body.secret);
  });
  after(() => server.stop());

  const queuedIn = async (api: Api, namespace: string) =>
    (await api.get(`/v1/tasks?namespace=${namespace}&limit=100`)).body.items.filter((t: any) => ['queued', 'scheduled', 'waiting'].includes(t.status)).length;

  it('refuses tasks beyond maxQueuedTasks, a batch whole, and takes them again once the backlog drains', async () => {
    assert.equal((await admin.put('/v1/namespaces/team-a', { quotas: { maxQueuedTasks: 3 } })).status, 200);
    for (let i = 0; i < 3; i++) assert.equal((await teamA.post('/v1/tasks', { type: 'q' })).status, 201);
    const refused = await teamA.post('/v1/tasks', { type: 'q' });
    assert.equal(refused.status, 429);
    assert.equal(code(refused), 'FLEETD_ERR_QUOTA_EXCEEDED');
    assert.equal(refused.headers.get('retry-after'), '1');
    assert.deepEqual(
      { quota: refused.body.error.details.quota, limit: refused.body.error.details.limit, namespace: refused.body.error.details.namespace },
      { quota: 'maxQueuedTasks', limit: 3, namespace: 'team-a' },
    );
    // The default namespace has no quota: a `*` key submits there as ever.
    assert.equal((await admin.post('/v1/tasks', { type: 'q' })).status, 201);
    assert.equal(await queuedIn(admin, 'team-a'), 3, 'the refused task was not written');

    // One claimed and done: room for one, but not for a batch of two (refused whole).
    const agent = await teamA.registerAgent(['q']);
    const [task] = await teamA.claim(agent.id);
    assert.equal((await teamA.post(`/v1/tasks/${task.id}/complete`, { agentId: agent.id, result: null })).status, 200);
    const batch = await teamA.post('/v1/tasks/batch', { tasks: [{ type: 'q' }, { type: 'q' }] });
    assert.equal(batch.status, 429, JSON.stringify(batch.body));
    assert.equal(await queuedIn(admin, 'team-a'), 2);
    assert.equal((await teamA.post('/v1/tasks', { type: 'q' })).status, 201);
    await admin.put('/v1/namespaces/team-a', { quotas: {} });
    assert.equal((await teamA.post('/v1/tasks', { type: 'q' })).status, 201, 'a lifted quota applies at once on the node that lifted it');
  });

  it('refuses tasks beyond maxTasksPerSecond with a Retry-After, and a batch larger than a second’s worth outright', async () => {
    await admin.put('/v1/namespaces/team-rate', { quotas: { maxTasksPerSecond: 5 } });
    const api = admin.as((await admin.post('/v1/keys', { name: 'rate', scope: 'submit', namespaces: ['team-rate'] })).body.secret);
    const tooBig = await api.post('/v1/tasks/batch', { tasks: Array.from({ length: 6 }, () => ({ type: 'r' })) });
    assert.equal(tooBig.status, 429);
    assert.match(tooBig.body.error.message, /smaller batches/);
    // Five in a batch, then one more within the same second: refused. On a machine so slow that
    // the second passed in between, the window has moved on and the pair is tried again.
    let refused: any;
    for (let attempt = 0; attempt < 5 && !refused; attempt++) {
      const started = Date.now();
      const five = await api.post('/v1/tasks/batch', { tasks: Array.from({ length: 5 }, () => ({ type: 'r' })) });
      if (five.status === 429) {
        await new Promise((r) => setTimeout(r, Number(five.headers.get('retry-after')) * 1000));
        continue;
      }
      assert.equal(five.status, 201);
      const sixth = await api.post('/v1/tasks', { type: 'r' });
      if (sixth.status === 201 && Date.now() - started >= 1_000) continue;
      refused = sixth;
    }
    assert.equal(refused?.status, 429, JSON.stringify(refused?.body));
    assert.equal(refused.body.error.details.quota, 'maxTasksPerSecond');
    const wait = Number(refused.headers.get('retry-after'));
    assert.equal(wait, 1);
    await new Promise((r) => setTimeout(r, wait * 1000));
    assert.equal((await api.post('/v1/tasks', { type: 'r' })).status, 201, 'the next second has room again');
  });

  it('refuses an agent beyond maxAgents, and takes one again when an agent is removed', async () => {
    await admin.put('/v1/namespaces/team-bots', { quotas: { maxAgents: 2 } });
    const bots = admin.as((await admin.post('/v1/keys', { name: 'bots', scope: 'submit', namespaces: ['team-bots'] })).body.secret);
    const first = await bots.registerAgent(['b']);
    await bots.registerAgent(['b']);
    const third = await bots.post('/v1/agents', { name: 'third', capabilities: ['b'] });
    assert.equal(third.status, 429);
    assert.equal(code(third), 'FLEETD_ERR_QUOTA_EXCEEDED');
    assert.ok(Number(third.headers.get('retry-after')) > 0);
    // Other namespaces register as ever.
    assert.equal((await admin.post('/v1/agents', { name: 'elsewhere', capabilities: ['b'] })).status, 201);
    assert.equal((await admin.delete(`/v1/agents/${first.id}`)).status, 200);
    assert.equal((await bots.post('/v1/agents', { name: 'third', capabilities: ['b'] })).status, 201);
  });
});
