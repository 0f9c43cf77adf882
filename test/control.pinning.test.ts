import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { FleetClient, type FleetAgent } from '../src/client/index.js';
import { eventually, startTestServer, type TestServer } from './helpers.js';

describe('pinning a task to an agent or to agents with a label', { timeout: 120_000 }, () => {
  let server: TestServer;
  let client: FleetClient;
  const agents: FleetAgent[] = [];

  before(async () => {
    server = await startTestServer();
    client = new FleetClient({ url: server.url, apiKey: server.adminKey });
  });
  after(async () => {
    await Promise.all(agents.map((a) => a.stop({ timeoutMs: 1_000 })));
    await server?.stop();
  });

  /** An SDK agent over WebSocket that records which tasks it ran. */
  async function worker(name: string, labels: Record<string, string> = {}) {
    const ran: number[] = [];
    const agent = client.agent({ name, capabilities: ['render'], labels, concurrency: 4, transport: 'ws' });
    agents.push(agent);
    await agent.work((task) => {
      ran.push(task.id);
      return { by: name };
    });
    return { agent, ran };
  }

  it('pushes a pinned task only to its agent, and a label requirement only to agents with the label', async () => {
    const us = await worker('us', { region: 'us' });
    const eu = await worker('eu', { region: 'eu' });
    const pinned = await Promise.all(Array.from({ length: 6 }, () => client.submit({ type: 'render', agentId: us.agent.id! })));
    assert.deepEqual([...pinned[0].task.requires].sort(), [`agent:${us.agent.id}`, 'render']);
    const euOnly = await Promise.all(Array.from({ length: 6 }, () => client.submit({ type: 'render', requires: ['render', 'label:region=eu'] })));
    const all = [...pinned, ...euOnly].map((s) => s.task.id);
    await eventually(async () => (await Promise.all(all.map((id) => client.get(id)))).every((t) => t.status === 'completed'), 20_000, 'every task done');
    assert.deepEqual(us.ran.sort(), pinned.map((s) => s.task.id).sort(), 'the pinned tasks, and only them, ran on their agent');
    assert.deepEqual(eu.ran.sort(), euOnly.map((s) => s.task.id).sort());
  });

  it('keeps a task pinned to a busy agent queued rather than giving it to another', async () => {
    const api = server.api;
    const a = await api.registerAgent(['solo']);
    const b = await api.registerAgent(['solo']);
    const task = await api.submit({ type: 'solo', agentId: a.id });
    assert.deepEqual(await api.claim(b.id, 5, 0), []);
    const [got] = await api.claim(a.id, 5, 0);
    assert.equal(got.id, task.id);
  });

  it('refuses a pin to an unknown agent, a malformed label requirement and reserved capabilities, changing nothing', async () => {
    const api = server.api;
    const before = (await api.get('/v1/tasks?type=pin-bad')).body.items.length;
    const unknown = await api.post('/v1/tasks', { type: 'pin-bad', agentId: 'no-such-agent' });
    assert.equal(unknown.status, 404);
    assert.equal(unknown.body.error.code, 'FLEETD_ERR_NOT_FOUND');
    const batch = await api.post('/v1/tasks/batch', { tasks: [{ type: 'pin-bad' }, { type: 'pin-bad', agentId: 'no-such-agent' }] });
    assert.equal(batch.status, 404, 'all or nothing');
    for (const requires of [['label:=eu'], ['label:region'], ['label:a\nb=c'], ['region=eu'], ['agent:someone']]) {
      const reply = await api.post('/v1/tasks', { type: 'pin-bad', requires });
      assert.equal(reply.status, 400, `${JSON.stringify(requires)}: ${JSON.stringify(reply.body)}`);
      assert.equal(reply.body.error.code, 'FLEETD_ERR_VALIDATION');
    }
    assert.equal((await api.get('/v1/tasks?type=pin-bad')).body.items.length, before, 'no task was stored');
    for (const capabilities of [['agent:someone-else'], ['label:region']]) {
      const reply = await api.post('/v1/agents', { name: 'spoofer', capabilities });
      assert.equal(reply.status, 400, JSON.stringify(reply.body));
      assert.equal(reply.body.error.details.field, 'capabilities');
    }
  });
});
