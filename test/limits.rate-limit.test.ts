import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { resolveConfig } from '../src/config.js';
import { RateLimits } from '../src/limits/rate-limits.js';
import { startTestServer, type TestServer } from './helpers.js';

describe('rate limits', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ rateLimitWrite: 5, rateLimitRead: 1000, rateLimitHeartbeat: 3, rateLimitClaim: 4 });
  });
  after(() => server.stop());

  it('puts RateLimit headers on every response, errors included', async () => {
    for (const res of [await server.api.get('/v1/stats'), await server.api.get('/v1/nowhere'), await server.api.get('/v1/tasks/1/complete')]) {
      assert.equal(res.headers.get('ratelimit-limit'), '1000');
      assert.ok(Number(res.headers.get('ratelimit-remaining')) < 1000);
      assert.ok(Number(res.headers.get('ratelimit-reset')) >= 1);
    }
  });

  it('answers 429 with Retry-After and a coded error once a client spends its write budget, changing nothing', async () => {
    const newClient = async () => server.api.as((await server.api.post('/v1/keys', { name: 'client', scope: 'submit' })).body.secret);
    const [client, another] = [await newClient(), await newClient()];
    // Sent at once, so that they all fall in one one-second window however slow the machine is.
    const replies = await Promise.all(
      Array.from({ length: 7 }, (_, i) => client.post('/v1/tasks', { type: 'limited', payload: { i } })),
    );
    assert.deepEqual(replies.map((r) => r.status).sort(), [201, 201, 201, 201, 201, 429, 429]);
    const limited = replies.find((r) => r.status === 429)!;
    assert.equal(limited.body.error.code, 'FLEETD_ERR_RATE_LIMITED');
    assert.equal(limited.headers.get('ratelimit-remaining'), '0');
    assert.ok(Number(limited.headers.get('retry-after')) >= 1);
    const stored = await server.api.get('/v1/tasks?type=limited');
    assert.equal(stored.body.items.length, 5);
    // Another API key has its own budget.
    assert.equal((await another.post('/v1/tasks', { type: 'limited' })).status, 201);
  });

  /** Two agents in one registration: one write of the admin key's budget of 5 a second. */
  async function twoAgents(capability: string): Promise<{ id: string; token: string }[]> {
    const res = await server.api.post('/v1/agents/batch', { agents: [{ name: 'a', capabilities: [capability] }, { name: 'b', capabilities: [capability] }] });
    return res.body.items.map((r: any) => ({ id: r.agent.id, token: r.token }));
  }

  it('gives heartbeats a budget per agent, apart from the client write budget', async () => {
    const [a, b] = await twoAgents('hb');
    const agents = new Map([a, b].map((x) => [x.id, server.api.as(x.token)]));
    const beat = (id: string) => agents.get(id)!.post(`/v1/agents/${id}/heartbeat`);
    const aBeats = await Promise.all(Array.from({ length: 4 }, async () => (await beat(a.id)).status));
    assert.deepEqual(aBeats.sort(), [200, 200, 200, 429]);
    const res = await beat(b.id);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('ratelimit-limit'), '3');
  });

  it('gives claims a budget per agent', async () => {
    const [a, b] = await twoAgents('cl');
    const agents = new Map([a, b].map((x) => [x.id, server.api.as(x.token)]));
    const claim = (id: string) => agents.get(id)!.post('/v1/tasks/claim', { agentId: id });
    const statuses = await Promise.all(Array.from({ length: 5 }, async () => (await claim(a.id)).status));
    assert.deepEqual(statuses.sort(), [200, 200, 200, 200, 429]);
    assert.equal((await claim(b.id)).status, 200);
  });

  it('shares one budget between nodes through Redis, each node counting in memory between syncs', async () => {
    const redis = new Redis('redis://127.0.0.1:6379/6');
    const prefix = `fleetd-test-${Date.now()}-${Math.random()}:`;
    const config = resolveConfig({ rateLimitWrite: 3, redisPrefix: prefix }, {});
    const nodeA = new RateLimits(config, redis);
    const nodeB = new RateLimits(config, redis);
    try {
      const allowed = (node: RateLimits) => node.consume('write', 'shared')!.allowed;
      // Each node decides alone until it syncs: A spends two, tells Redis; B spends one and learns of A's two.
      assert.deepEqual([allowed(nodeA), allowed(nodeA)], [true, true]);
      await nodeA.flush();
      assert.equal(allowed(nodeB), true);
      await nodeB.flush();
      assert.equal(allowed(nodeB), false, 'B knows the budget of 3 is spent');
      const refused = nodeB.consume('write', 'shared')!;
      assert.deepEqual([refused.remaining, refused.resetSeconds], [0, 1]);
      // A learns it at its next sync, which its next request counted starts on a timer.
      assert.equal(allowed(nodeA), true, 'A has not heard of B yet: one more passes, the most a sync interval lets through');
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(await redis.get(`${prefix}rl:write:shared`), '4');
      assert.equal(allowed(nodeA), false);
      // A second later the window is over, on both nodes.
      await new Promise((r) => setTimeout(r, 1_000));
      assert.equal(allowed(nodeA), true);
      assert.equal(allowed(nodeB), true);
    } finally {
      nodeA.close();
      nodeB.close();
      await redis.quit();
    }
  });

  it('keeps counting in memory while Redis is away', async () => {
    // Nothing listens on port 1: every sync fails at once, and each node holds to its own count.
    const redis = new Redis('redis://127.0.0.1:1', { lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: () => null });
    redis.on('error', () => {});
    const limits = new RateLimits(resolveConfig({ rateLimitWrite: 2 }, {}), redis);
    try {
      const seen = [];
      for (let i = 0; i < 3; i++) {
        seen.push(limits.consume('write', 'alone')!.allowed);
        await limits.flush();
      }
      assert.deepEqual(seen, [true, true, false]);
    } finally {
      limits.close();
      redis.disconnect();
    }
  });
});
