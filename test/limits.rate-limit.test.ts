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

  it('shares one budget between nodes through Redis', async () => {
    const redis = new Redis('redis://127.0.0.1:6379/6');
    try {
      const config = resolveConfig({ rateLimitWrite: 3 }, {});
      const nodeA = new RateLimits(config, redis);
      const nodeB = new RateLimits(config, redis);
      const key = `shared-${Date.now()}-${Math.random()}`;
      const seen = [];
      for (const node of [nodeA, nodeB, nodeA, nodeB]) seen.push((await node.consume('write', key))!.allowed);
      assert.deepEqual(seen, [true, true, true, false]);
    } finally {
      await redis.quit();
    }
  });
});
