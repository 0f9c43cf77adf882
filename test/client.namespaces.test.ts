import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { FleetApiError, FleetClient, type FleetAgent, type Subscription, type TaskJson } from '../src/client/index.js';
import { eventually, startTestServer, type TestServer } from './helpers.js';

describe('SDK clients made for a namespace', () => {
  let server: TestServer;
  /** Clients of keys scoped to one namespace each, which name none: the key's one is theirs. */
  let teamA: FleetClient;
  let teamB: FleetClient;
  /** Clients of the `*` admin key, each made for one namespace (and one for none: default). */
  let adminA: FleetClient;
  let adminB: FleetClient;
  let admin: FleetClient;

  before(async () => {
    server = await startTestServer();
    const keyOf = async (namespace: string) => {
      const res = await server.api.post('/v1/keys', { name: `${namespace} ci`, scope: 'submit', namespaces: [namespace] });
      assert.equal(res.status, 201, JSON.stringify(res.body));
      return res.body.secret as string;
    };
    teamA = new FleetClient({ url: server.url, apiKey: await keyOf('team-a') });
    teamB = new FleetClient({ url: server.url, apiKey: await keyOf('team-b') });
    adminA = new FleetClient({ url: server.url, apiKey: server.adminKey, namespace: 'team-a' });
    adminB = new FleetClient({ url: server.url, apiKey: server.adminKey, namespace: 'team-b' });
    admin = new FleetClient({ url: server.url, apiKey: server.adminKey });
  });
  after(() => server.stop());

  it('submits to the namespace of the client, or of its key when the client names none', async () => {
    assert.equal((await adminA.submit({ type: 'ns-submit' })).task.namespace, 'team-a');
    assert.equal((await adminB.submit({ type: 'ns-submit' })).task.namespace, 'team-b');
    assert.equal((await teamA.submit({ type: 'ns-submit' })).task.namespace, 'team-a');
    const batch = await teamB.submitBatch([{ type: 'ns-submit' }, { type: 'ns-submit' }]);
    assert.deepEqual(
      batch.map((s) => s.task.namespace),
      ['team-b', 'team-b'],
    );
    assert.equal((await admin.submit({ type: 'ns-submit' })).task.namespace, 'default');

    const listed = async (client: FleetClient) => (await client.list({ type: 'ns-submit', limit: 100 })).items.map((t) => t.namespace).sort();
    assert.deepEqual(await listed(adminA), ['team-a', 'team-a']);
    assert.deepEqual(await listed(teamB), ['team-b', 'team-b', 'team-b']);
    assert.deepEqual(await listed(admin), ['default', 'team-a', 'team-a', 'team-b', 'team-b', 'team-b'], 'a client that names none reads every namespace its key reaches');
  });

  it("gives agents only their namespace's tasks, each agent registered in its client's namespace", async () => {
    const agents: FleetAgent[] = [];
    const seen = new Map<string, TaskJson[]>();
    try {
      for (const [name, client] of [
        ['a', adminA],
        ['b', teamB],
        ['default', admin],
      ] as const) {
        const agent = client.agent({ name: `ns-${name}`, capabilities: ['ns-work'], concurrency: 4 });
        seen.set(name, []);
        await agent.work(async (task) => {
          seen.get(name)!.push(task);
          return name;
        });
        agents.push(agent);
      }
      const [a, b, byDefault] = agents;
      assert.equal((await adminA.request<{ namespace: string }>('GET', `/v1/agents/${a.id}`)).namespace, 'team-a');
      assert.equal((await admin.request<{ namespace: string }>('GET', `/v1/agents/${b.id}`)).namespace, 'team-b');
      assert.equal((await admin.request<{ namespace: string }>('GET', `/v1/agents/${byDefault.id}`)).namespace, 'default');

      // Interleaved, so that every agent is free (and asking) while other namespaces' tasks wait.
      const submitted = { a: [] as number[], b: [] as number[], default: [] as number[] };
      for (let i = 0; i < 10; i++) {
        submitted.a.push((await teamA.submit({ type: 'ns-work', payload: i })).task.id);
        submitted.b.push((await adminB.submit({ type: 'ns-work', payload: i })).task.id);
        submitted.default.push((await admin.submit({ type: 'ns-work', payload: i })).task.id);
      }
      await eventually(async () => (await admin.list({ type: 'ns-work', status: 'completed', limit: 100 })).items.length === 30, 10_000, 'every task done');

      const namespaceOf = { a: 'team-a', b: 'team-b', default: 'default' } as const;
      for (const name of ['a', 'b', 'default'] as const) {
        const got = seen.get(name)!;
        assert.deepEqual(
          got.map((t) => t.id).sort((x, y) => x - y),
          submitted[name],
          `agent ${name} did its namespace's tasks, and only them`,
        );
        assert.ok(got.every((t) => t.namespace === namespaceOf[name]));
      }
      const done = await adminB.list({ type: 'ns-work', status: 'completed', limit: 100 });
      assert.equal(done.items.length, 10);
      assert.ok(done.items.every((t) => t.result === 'b' && t.agentId === b.id));
    } finally {
      await Promise.all(agents.map((agent) => agent.stop()));
    }
  });

  it("answers a task of another namespace with the SDK's not-found error, as a task that does not exist", async () => {
    const theirs = (await teamB.submit({ type: 'ns-hidden' })).task;
    const missing = await adminA.get(999_999_999).then(
      () => assert.fail('a task that does not exist was found'),
      (err: unknown) => err,
    );
    assert.ok(missing instanceof FleetApiError);
    for (const client of [teamA, adminA]) {
      for (const call of [() => client.get(theirs.id), () => client.waitFor(theirs.id, { timeoutMs: 50 }), () => client.cancel(theirs.id)]) {
        await assert.rejects(call, (err: unknown) => {
          assert.ok(err instanceof FleetApiError, String(err));
          assert.equal(err.status, 404);
          assert.equal(err.code, 'FLEETD_ERR_NOT_FOUND');
          assert.equal(err.message, missing.message.replace('999999999', String(theirs.id)));
          return true;
        });
      }
    }
    assert.equal((await adminB.get(theirs.id)).status, 'queued', 'untouched, and found in its own namespace');
    assert.equal((await admin.get(theirs.id)).namespace, 'team-b');
  });

  it("tells a client's event subscription only of its namespace's tasks", async () => {
    const heard = new Map<FleetClient, { id: number; namespace: string }[]>([
      [adminA, []],
      [teamB, []],
      [admin, []],
    ]);
    const subscriptions: Subscription[] = [];
    try {
      for (const [client, got] of heard) {
        subscriptions.push(
          await client.subscribe(['tasks'], (event) => {
            if (event.name === 'task.created' && event.data.task.type === 'ns-events') got.push({ id: event.data.task.id, namespace: event.data.task.namespace });
          }),
        );
      }
      const b1 = (await teamB.submit({ type: 'ns-events' })).task.id;
      const a1 = (await adminA.submit({ type: 'ns-events' })).task.id;
      const b2 = (await adminB.submit({ type: 'ns-events' })).task.id;
      // Events come in order: once a subscription has the last one of its namespace, any other it were sent would be in too.
      await eventually(() => heard.get(adminA)!.some((e) => e.id === a1) && heard.get(teamB)!.some((e) => e.id === b2) && heard.get(admin)!.length === 3, 5_000, 'the events');
      assert.deepEqual(heard.get(adminA), [{ id: a1, namespace: 'team-a' }]);
      assert.deepEqual(heard.get(teamB), [
        { id: b1, namespace: 'team-b' },
        { id: b2, namespace: 'team-b' },
      ]);
      assert.deepEqual(
        heard.get(admin)!.map((e) => e.id),
        [b1, a1, b2],
      );
    } finally {
      for (const subscription of subscriptions) subscription.close();
    }
  });

  it("answers a namespace the client's key does not reach with 404 on the first request", async () => {
    const outOfReach = new FleetClient({ url: server.url, apiKey: teamA.options.apiKey, namespace: 'team-b' });
    await assert.rejects(outOfReach.submit({ type: 'ns-reach' }), (err: unknown) => err instanceof FleetApiError && err.status === 404 && err.code === 'FLEETD_ERR_NOT_FOUND');
    const agent = outOfReach.agent({ name: 'lost', capabilities: ['ns-reach'] });
    await assert.rejects(agent.work(async () => null), (err: unknown) => err instanceof FleetApiError && err.status === 404);
    await agent.stop();
    assert.equal((await admin.list({ type: 'ns-reach' })).items.length, 0);
  });

  it('refuses a bad namespace when the client is made, before any request', () => {
    for (const namespace of ['', 'Team-A', 'team a', '-team', '*', 'a/b', 'x'.repeat(64), 'é']) {
      assert.throws(
        () => new FleetClient({ url: server.url, apiKey: server.adminKey, namespace }),
        (err: unknown) => err instanceof TypeError && err.message.includes(JSON.stringify(namespace)) && err.message.includes('namespace'),
        `namespace ${JSON.stringify(namespace)}`,
      );
    }
    assert.equal(new FleetClient({ url: server.url, namespace: 'x'.repeat(63) }).options.namespace, 'x'.repeat(63));
  });
});

describe('the Fleetd-Namespace header on every request and socket of a client', () => {
  it('is sent on HTTP requests, the event stream and the agent stream, with the credential of each', async () => {
    const seen: { path: string; headers: IncomingHttpHeaders }[] = [];
    // A bare HTTP server that answers registration and refuses every WebSocket: only what arrives matters here.
    const bare = createServer((req, res) => {
      seen.push({ path: `${req.method} ${req.url}`, headers: req.headers });
      res.writeHead(201, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ agent: { id: 'agt_ns' }, token: 'agent-token' }));
    });
    bare.on('upgrade', (req, socket) => {
      seen.push({ path: `UPGRADE ${req.url?.split('?')[0]}`, headers: req.headers });
      socket.end('HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n');
    });
    bare.listen(0, '127.0.0.1');
    await once(bare, 'listening');
    const url = `http://127.0.0.1:${(bare.address() as AddressInfo).port}`;
    const client = new FleetClient({ url, apiKey: 'the-key', namespace: 'team-a', retries: 0 });
    const agent = client.agent({ name: 'a', capabilities: ['x'], reconnect: { minMs: 10, maxMs: 20 } });
    try {
      await client.registerAgent({ name: 'a', capabilities: ['x'] });
      await assert.rejects(client.subscribe(['tasks'], () => {}));
      const working = agent.work(async () => null).catch(() => {});
      await eventually(() => seen.some((s) => s.path === 'UPGRADE /v1/agents/agt_ns/stream'), 5_000, 'the agent stream upgrade');
      await agent.stop();
      await working;
    } finally {
      await agent.stop();
      bare.close();
      bare.closeAllConnections();
    }
    const first = (path: string) => seen.find((s) => s.path === path)?.headers;
    assert.equal(first('POST /v1/agents')?.['fleetd-namespace'], 'team-a');
    assert.equal(first('POST /v1/agents')?.authorization, 'Bearer the-key');
    assert.equal(first('UPGRADE /v1/events')?.['fleetd-namespace'], 'team-a');
    assert.equal(first('UPGRADE /v1/events')?.authorization, 'Bearer the-key');
    assert.equal(first('UPGRADE /v1/agents/agt_ns/stream')?.['fleetd-namespace'], 'team-a');
    assert.equal(first('UPGRADE /v1/agents/agt_ns/stream')?.authorization, 'Bearer agent-token');
  });
});
