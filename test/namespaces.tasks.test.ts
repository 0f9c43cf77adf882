import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startTestServer, type Api, type TestServer } from './helpers.js';
import { connect } from './ws-helpers.js';
import { FleetError } from '../src/domain/errors.js';

/**
 * Tasks and agents in two namespaces, team-a and team-b, on one fleetd over real HTTP: agents
 * registered in each (by the admin key, naming the namespace) claim, see and touch only their own
 * namespace's tasks; a task of the other namespace answers exactly as a task that does not exist.
 */
describe('tasks and agents in namespaces', () => {
  let server: TestServer;
  let api: Api;
  const agents: Record<'a' | 'b', { id: string; token: string; api: Api }> = {} as never;

  before(async () => {
    server = await startTestServer();
    api = server.api;
    for (const team of ['a', 'b'] as const) {
      const res = await api.post('/v1/agents', { name: `worker-${team}`, capabilities: ['build'], namespace: `team-${team}` });
      assert.equal(res.status, 201);
      assert.equal(res.body.agent.namespace, `team-${team}`);
      agents[team] = { id: res.body.agent.id, token: res.body.token, api: api.as(res.body.token) };
    }
  });
  after(() => server.stop());

  const submit = async (namespace: string | undefined, extra: Record<string, unknown> = {}) => {
    const res = await api.post('/v1/tasks', { type: 'build', ...(namespace === undefined ? {} : { namespace }), ...extra });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    return res.body.task;
  };
  const claim = async (team: 'a' | 'b', waitMs = 0) => {
    const res = await agents[team].api.post('/v1/tasks/claim', { agentId: agents[team].id, max: 10, waitMs });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return res.body.tasks as { id: number; namespace: string; requires: string[] }[];
  };

  it("gives each agent only its own namespace's tasks, and wakes a waiting one only for them", async () => {
    const plain = await submit(undefined);
    const a = await submit('team-a');
    const b = await submit('team-b', { requires: [] });
    assert.deepEqual([plain.namespace, a.namespace, b.namespace], ['default', 'team-a', 'team-b']);
    assert.deepEqual(a.requires, ['build'], "the namespace is not among the task's requirements");
    assert.deepEqual((await claim('a')).map((t) => t.id), [a.id]);
    assert.deepEqual((await claim('b')).map((t) => t.id), [b.id]);
    assert.deepEqual(await claim('a'), []);

    // A long-poll of team-a sleeps through default's and team-b's new tasks, and takes team-a's.
    const waiting = claim('a', 10_000);
    const others = [await submit(undefined), await submit('team-b')];
    const mine = await submit('team-a');
    assert.deepEqual((await waiting).map((t) => t.id), [mine.id]);
    assert.deepEqual((await claim('b')).map((t) => t.id), [others[1].id]);
    for (const id of [plain.id, others[0].id]) assert.equal((await api.get(`/v1/tasks/${id}`)).body.status, 'queued');
  });

  it('answers an agent acting on a task of another namespace exactly as on a missing one', async () => {
    const theirs = await submit('team-b');
    const [leased] = await claim('b');
    assert.equal(leased.id, theirs.id);
    const missing = 987_654_321;
    const { id: agentId, api: asA } = agents.a;
    const attempts: [string, Record<string, unknown>][] = [
      ['complete', { agentId, result: 1 }],
      ['fail', { agentId, error: 'no' }],
      ['extend', { agentId }],
      ['release', { agentId, delayMs: 0 }],
      ['progress', { agentId, progress: 0.5 }],
      ['logs', { agentId, lines: [{ message: 'hi' }] }],
      ['output', { agentId, text: 'hi' }],
    ];
    for (const [action, body] of attempts) {
      const other = await asA.post(`/v1/tasks/${theirs.id}/${action}`, body);
      const none = await asA.post(`/v1/tasks/${missing}/${action}`, body);
      assert.equal(other.status, 404, `${action}: ${JSON.stringify(other.body)}`);
      assert.equal(none.status, 404, action);
      assert.deepEqual(other.body, JSON.parse(JSON.stringify(none.body).replaceAll(String(missing), String(theirs.id))), action);
    }
    const batch = await asA.post('/v1/tasks/complete', { agentId, items: [{ op: 'complete', id: theirs.id, result: 1 }] });
    assert.equal(batch.status, 200);
    assert.equal(batch.body.items[0].error.code, 'FLEETD_ERR_NOT_FOUND');
    // Nothing of it changed: still leased to team-b's agent, which completes it.
    assert.equal((await api.get(`/v1/tasks/${theirs.id}`)).body.agentId, agents.b.id);
    assert.equal((await agents.b.api.post(`/v1/tasks/${theirs.id}/complete`, { agentId: agents.b.id, result: 'done' })).status, 200);
  });

  it('keeps idempotency keys per namespace', async () => {
    const first = await api.post('/v1/tasks', { type: 'build', namespace: 'team-a', idempotencyKey: 'nightly' });
    const second = await api.post('/v1/tasks', { type: 'build', namespace: 'team-b', idempotencyKey: 'nightly' });
    const again = await api.post('/v1/tasks', { type: 'build', namespace: 'team-a', idempotencyKey: 'nightly' });
    assert.deepEqual([first.status, second.status, again.status], [201, 201, 200]);
    assert.notEqual(first.body.task.id, second.body.task.id);
    assert.equal(again.body.task.id, first.body.task.id);
    assert.equal(second.body.task.idempotencyKey, 'nightly');
    // U+001F is what keeps the keys of namespaces apart in the store: no key may hold it.
    const odd = await api.post('/v1/tasks', { type: 'build', namespace: 'team-a', idempotencyKey: 'night\u001fly' });
    assert.equal(odd.status, 400);
    assert.equal(odd.body.error.details.field, 'idempotencyKey');
    await claim('a');
    await claim('b');
  });

  it('refuses a parent, a dependency or a pinned agent of another namespace exactly as a missing one', async () => {
    const theirs = await submit('team-b');
    const missing = 987_654_321;
    for (const field of ['parentId', 'dependsOn'] as const) {
      const value = (id: number) => (field === 'parentId' ? id : [id]);
      const other = await api.post('/v1/tasks', { type: 'build', namespace: 'team-a', [field]: value(theirs.id) });
      const none = await api.post('/v1/tasks', { type: 'build', namespace: 'team-a', [field]: value(missing) });
      // A missing parent or dependency is refused as invalid input (400), before anything is written.
      assert.equal(none.status, 400, field);
      assert.equal(other.status, none.status, field);
      assert.deepEqual(other.body, JSON.parse(JSON.stringify(none.body).replaceAll(String(missing), String(theirs.id))), field);
    }
    const pinned = await api.post('/v1/tasks', { type: 'build', namespace: 'team-a', agentId: agents.b.id });
    assert.equal(pinned.status, 404);
    assert.equal(pinned.body.error.code, 'FLEETD_ERR_NOT_FOUND');
    const own = await submit('team-a', { parentId: (await submit('team-a')).id, agentId: agents.a.id });
    assert.equal(own.namespace, 'team-a');
    await claim('a');
    await claim('b');
  });

  it('lists, exports and counts by the namespace named, and acts in bulk within it', async () => {
    const tagged = (ns: string) => submit(ns, { tags: ['listed'] });
    const [a1, a2, b1, d1] = [await tagged('team-a'), await tagged('team-a'), await tagged('team-b'), await tagged('default')];
    const ids = async (path: string) => ((await api.get(path)).body.items as { id: number }[]).map((t) => t.id).sort((x, y) => x - y);
    assert.deepEqual(await ids('/v1/tasks?tag=listed&namespace=team-a'), [a1.id, a2.id]);
    assert.deepEqual(await ids('/v1/tasks?tag=listed&namespace=default'), [d1.id]);
    assert.deepEqual(await ids('/v1/tasks?tag=listed'), [a1.id, a2.id, b1.id, d1.id], 'a key reaching every namespace lists them all');
    const exported = (await api.get('/v1/tasks/export?namespace=team-b&status=queued')).body as string | { id: number };
    // One line of NDJSON is a JSON document of its own, which the client parses.
    const lines = typeof exported === 'string' ? exported.trim().split('\n').map((l) => JSON.parse(l)) : [exported];
    assert.ok(lines.length > 0 && lines.every((t) => t.namespace === 'team-b'));
    assert.ok(lines.some((t) => t.id === b1.id));
    const agentIds = async (path: string) => ((await api.get(path)).body.items as { id: string }[]).map((x) => x.id);
    assert.deepEqual(await agentIds('/v1/agents?namespace=team-b'), [agents.b.id]);
    assert.deepEqual(await agentIds('/v1/agents?namespace=default'), []);

    const bulk = await api.post('/v1/tasks/bulk', { action: 'cancel', filter: { tag: 'listed' }, namespace: 'team-a' });
    assert.equal(bulk.status, 200);
    assert.deepEqual([bulk.body.matched, bulk.body.changed], [2, 2]);
    for (const [task, status] of [[a1, 'cancelled'], [a2, 'cancelled'], [b1, 'queued'], [d1, 'queued']] as const) {
      assert.equal((await api.get(`/v1/tasks/${task.id}`)).body.status, status);
    }
    await claim('b');
  });

  it('refuses a namespace name that is not one with 400, changing nothing', async () => {
    const before = (await api.get('/v1/tasks?limit=1000')).body.items.length;
    for (const bad of ['Team-A', '-a', 'a b', 'x'.repeat(64), '']) {
      const submitted = await api.post('/v1/tasks', { type: 'build', namespace: bad });
      assert.equal(submitted.status, 400, bad);
      assert.equal(submitted.body.error.code, 'FLEETD_ERR_VALIDATION');
      assert.equal((await api.post('/v1/tasks/batch', { tasks: [{ type: 'build' }], namespace: bad })).status, 400, bad);
      assert.equal((await api.post('/v1/agents', { name: 'x', namespace: bad })).status, 400, bad);
      assert.equal((await api.get(`/v1/tasks?namespace=${encodeURIComponent(bad)}`)).status, 400, bad);
      assert.equal((await api.get(`/v1/agents?namespace=${encodeURIComponent(bad)}`)).status, 400, bad);
    }
    assert.equal((await api.post('/v1/tasks', { type: 'build', requires: ['namespace:team-a'] })).status, 400);
    assert.equal((await api.post('/v1/agents', { name: 'x', capabilities: ['namespace:team-a'] })).status, 400);
    assert.equal((await api.get('/v1/tasks?limit=1000')).body.items.length, before);
  });

  it('streams events and counts stats of the namespace a socket or a request names only', async () => {
    const peer = await connect(`${server.url}/v1/events?namespace=team-a`, { authorization: `Bearer ${server.adminKey}` });
    try {
      peer.send({ type: 'subscribe', topics: ['tasks', 'agents', 'queue:streamed'] });
      await peer.next('subscribed');
      await submit('team-b', { type: 'streamed', requires: ['build'] });
      await submit(undefined, { type: 'streamed', requires: ['build'] });
      await api.post('/v1/agents', { name: 'elsewhere', namespace: 'team-b' });
      const mine = await submit('team-a', { type: 'streamed', requires: ['build'] });
      await api.post('/v1/agents', { name: 'here', namespace: 'team-a' });
      const seen: { name: string; data: { task?: { id: number; namespace: string }; agent?: { namespace: string } } }[] = [];
      while (!seen.some((e) => e.name === 'agent.registered')) seen.push(...(await peer.next('events')).events);
      assert.deepEqual(
        seen.map((e) => [e.name, (e.data.task ?? e.data.agent)!.namespace]),
        [['task.created', 'team-a'], ['agent.registered', 'team-a']],
        'the events of team-b and default never reach it',
      );
      assert.equal(seen[0].data.task!.id, mine.id);
    } finally {
      await peer.close();
    }
    await assert.rejects(connect(`${server.url}/v1/events?namespace=Nope`, { authorization: `Bearer ${server.adminKey}` }), (err: { status?: number }) => err.status === 400);

    const queued = async (query: string) => ((await api.get(`/v1/stats${query}`)).body.tasks.byType.streamed?.queued ?? 0) as number;
    assert.deepEqual([await queued(''), await queued('?namespace=team-a'), await queued('?namespace=default'), await queued('?namespace=team-c')], [3, 1, 1, 0]);
    const agentsOf = async (namespace: string) => (await api.get(`/v1/stats?namespace=${namespace}`)).body.agents.byStatus.online as number;
    assert.deepEqual([await agentsOf('team-a'), await agentsOf('team-b'), await agentsOf('team-c')], [2, 2, 0]);
    assert.equal((await api.get('/v1/stats?namespace=Nope')).status, 400);
    await claim('a');
    await claim('b');
  });

  it("answers a reader that reaches team-a only, in core, as if team-b's tasks and agents did not exist", async () => {
    // Core, as the routes call it: they hand it the namespaces a request reaches, as these calls do,
    // and answer what it throws (test/namespaces.crossing.test.ts does the same over HTTP).
    const { fleet } = server;
    const reach = ['team-a'];
    const theirs = await submit('team-b');
    const missing = 987_654_321;
    const refusal = async (call: Promise<unknown>) => {
      const err = await call.then(() => undefined, (e: unknown) => e);
      assert.ok(err instanceof FleetError, `expected a refusal, got ${String(err)}`);
      return JSON.stringify(err.toJSON());
    };
    const sameAsMissing = async (what: string, call: (id: number) => Promise<unknown>) => {
      const other = await refusal(call(theirs.id));
      assert.match(other, /FLEETD_ERR_NOT_FOUND/, what);
      assert.equal(other, (await refusal(call(missing))).replaceAll(String(missing), String(theirs.id)), what);
    };
    await sameAsMissing('get', (id) => fleet.tasks.get(id, reach));
    await sameAsMissing('children', (id) => fleet.tasks.children({ id, limit: 10, namespaces: reach }));
    await sameAsMissing('wait', (id) => fleet.tasks.waitForEnd(id, 10, undefined, reach));
    await sameAsMissing('cancel', (id) => fleet.tasks.cancel(id, 'not yours', reach));
    await sameAsMissing('retry', (id) => fleet.tasks.retry(id, reach));
    const agentOther = await refusal(fleet.agents.get(agents.b.id, reach));
    assert.equal(agentOther, (await refusal(fleet.agents.get('no-such-agent', reach))).replaceAll('no-such-agent', agents.b.id));
    assert.equal(await refusal(fleet.agents.remove(agents.b.id, reach)), agentOther);
    assert.ok((await fleet.tasks.list({ limit: 1000, namespaces: reach })).items.every((t) => t.namespace === 'team-a'));
    // Nothing of team-b's changed.
    assert.equal((await api.get(`/v1/tasks/${theirs.id}`)).body.status, 'queued');
    assert.equal((await api.get(`/v1/agents/${agents.b.id}`)).status, 200);
    await claim('b');
  });

  it("answers an agent's token naming another namespace, or another agent's id, as it always did", async () => {
    const other = await agents.a.api.post(`/v1/agents/${agents.b.id}/heartbeat`);
    assert.equal(other.status, 403, 'a token acts for its own agent only');
    const own = await agents.a.api.post(`/v1/agents/${agents.a.id}/heartbeat`);
    assert.equal(own.status, 200);
    assert.equal(own.body.namespace, 'team-a');
  });
});
