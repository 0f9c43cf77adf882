import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import { FleetApiError, FleetClient } from '../src/client/index.js';
import { startTestServer, type TestServer } from './helpers.js';

/** A node in trouble: a real HTTP server that answers every request with `behaviour`, counting them. */
async function troubledNode(behaviour: 'reset' | 503): Promise<{ url: string; requests: number; server: Server }> {
  const node = { url: '', requests: 0, server: createServer() };
  node.server.on('request', (req, res) => {
    node.requests++;
    if (behaviour === 'reset') return req.socket.destroy();
    res.writeHead(503, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: { code: 'FLEETD_ERR_SHUTTING_DOWN', message: 'closing', details: {} } }));
  });
  node.server.listen(0, '127.0.0.1');
  await once(node.server, 'listening');
  node.url = `http://127.0.0.1:${(node.server.address() as AddressInfo).port}`;
  return node;
}

/** A URL where nothing listens: connections are refused. */
async function deadUrl(): Promise<string> {
  const server = createServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  await new Promise((r) => server.close(r));
  return url;
}

describe('SDK with several node URLs', () => {
  let fleet: TestServer;
  before(async () => {
    fleet = await startTestServer();
  });
  after(() => fleet.stop());

  it('moves past a node that refuses connections, for any call, and stays on the one that answers', async () => {
    const client = new FleetClient({ urls: [await deadUrl(), fleet.url], apiKey: fleet.adminKey });
    const { agent } = await client.registerAgent({ name: 'moved', capabilities: ['x'] });
    assert.equal(client.url, fleet.url);
    assert.equal((await fleet.api.get(`/v1/agents/${agent.id}`)).status, 200);
    assert.ok('tasks' in (await client.stats()), 'later calls go there too');
  });

  it('retries a submit on the next node after a reset connection, and makes one task of it', async () => {
    const resetting = await troubledNode('reset');
    try {
      const client = new FleetClient({ urls: [resetting.url, fleet.url], apiKey: fleet.adminKey });
      const { task, created } = await client.submit({ type: 'failover-submit', payload: { n: 1 } });
      assert.equal(created, true);
      assert.equal(resetting.requests, 1, 'the first node got the submit, and may have acted on it');
      assert.match(task.idempotencyKey ?? '', /^sdk-/, 'so the client gave it a key');
      const listed = await fleet.api.get('/v1/tasks?type=failover-submit');
      assert.deepEqual(listed.body.items.map((t: { id: number }) => t.id), [task.id]);
    } finally {
      resetting.server.close();
    }
  });

  it('does not repeat a registration the failed node may have acted on', async () => {
    const resetting = await troubledNode('reset');
    try {
      const client = new FleetClient({ urls: [resetting.url, fleet.url], apiKey: fleet.adminKey });
      await assert.rejects(client.registerAgent({ name: 'not-twice' }), (err: Error) => !(err instanceof FleetApiError));
      assert.equal(resetting.requests, 1);
      assert.equal(client.url, fleet.url, 'the next call goes to the next node');
      assert.equal((await client.registerAgent({ name: 'now' })).agent.name, 'now');
    } finally {
      resetting.server.close();
    }
  });

  it('moves on from a node answering 503, retrying reads there', async () => {
    const closing = await troubledNode(503);
    try {
      const client = new FleetClient({ urls: [closing.url, fleet.url], apiKey: fleet.adminKey });
      const page = await client.list({ limit: 1 });
      assert.ok(Array.isArray(page.items));
      assert.equal(closing.requests, 1);
    } finally {
      closing.server.close();
    }
  });

  it('gives up after its attempts when no node answers', async () => {
    const client = new FleetClient({ urls: [await deadUrl(), await deadUrl()], apiKey: fleet.adminKey, retries: 3 });
    await assert.rejects(client.stats(), (err: Error) => (err.cause as { code?: string })?.code === 'ECONNREFUSED');
  });

  it('with one URL, resends what is safe to the same server', async () => {
    const resetting = await troubledNode('reset');
    try {
      const client = new FleetClient({ url: resetting.url, apiKey: fleet.adminKey, retries: 2 });
      await assert.rejects(client.stats());
      assert.equal(resetting.requests, 3, 'a read: sent, then resent twice');
      await assert.rejects(client.registerAgent({ name: 'once' }));
      assert.equal(resetting.requests, 4, 'a registration: sent once');
    } finally {
      resetting.server.close();
    }
  });
});
