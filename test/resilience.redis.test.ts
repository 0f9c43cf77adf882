import assert from 'node:assert/strict';
import { after, before, describe, it, type TestContext } from 'node:test';
import pg from 'pg';
import type { Browser } from 'playwright-core';
import { launchBrowser, signedInPage } from './browser.js';
import { eventually } from './helpers.js';
import { logLines, metric, ResilienceCluster } from './resilience/cluster.js';
import { ThrowawayRedis } from './resilience/services.js';
import { TEST_DATABASE_URL } from './store/postgres.js';

/**
 * How long Redis stays away. The scenario is 30 s (FLEETD_TEST_REDIS_OUTAGE_MS=30000); 10 s
 * by default keeps the suite short, and is already many times ioredis's reconnect backoff (2 s at
 * most), so every connection has failed, retried and given up commands before Redis returns.
 */
const OUTAGE_MS = Number(process.env.FLEETD_TEST_REDIS_OUTAGE_MS ?? 10_000);

/** Redis stopped and cut under two fleetd nodes at work, on a Redis of the test's own (and the suite's PostgreSQL). */
describe('two nodes survive Redis going away', { timeout: 120_000 + OUTAGE_MS }, () => {
  let redis: ThrowawayRedis;
  let cluster: ResilienceCluster;
  let browser: Browser | undefined;
  const db = new pg.Pool({ connectionString: TEST_DATABASE_URL, max: 2 });

  before(async () => {
    redis = await ThrowawayRedis.create();
    cluster = new ResilienceCluster(TEST_DATABASE_URL, redis.url, async (schema, ids) =>
      (await db.query<{ id: string }>(`SELECT id FROM ${schema}.tasks WHERE id = ANY($1::bigint[]) AND status = 'completed'`, [ids])).rows.map((r) => Number(r.id)),
    );
    await cluster.start();
  });
  after(async () => {
    try {
      await browser?.close();
      await cluster?.close();
      await db.query(`DROP SCHEMA IF EXISTS ${cluster.schema} CASCADE`);
    } finally {
      await db.end();
      await redis?.destroy();
    }
  });

  const redisUp = (i: number) => metric(cluster.nodes[i], 'fleetd_dependency_up{dependency="redis"}');
  const outageLogs = () => cluster.nodes.map((n) => [logLines(n, /^redis is unavailable/).length, logLines(n, /^redis is available again/).length]);

  /**
   * A task list read (and cached) on node 1 shows a task submitted on node 0 next: no cached list
   * outlives the write, whatever Redis does. Node 0's invalidation reaches node 1 through Redis
   * pub/sub, after node 0 has answered, so node 1 is given 2 s; a list left cached would stay stale
   * for the cache's 30 s.
   */
  async function listsStayFresh(label: string): Promise<void> {
    const type = `fresh-${label}-${Date.now()}`;
    const read = () => cluster.nodes[1].api.get(`/v1/tasks?type=${type}`);
    assert.deepEqual((await read()).body.items, []);
    await read();
    const submitted = await cluster.nodes[0].api.post('/v1/tasks', { type });
    assert.equal(submitted.status, 201);
    const listed = async () => (await read()).body.items.map((t: { id: number }) => t.id);
    await eventually(async () => (await listed()).includes(submitted.body.task.id), 2_000, `${label}: node 1 listing the task node 0 just took`);
  }

  async function recovered(t: TestContext, name: string): Promise<void> {
    await eventually(async () => (await redisUp(0)) === 1 && (await redisUp(1)) === 1, 10_000, 'both nodes see Redis again');
    for (const node of cluster.nodes) assert.equal((await node.api.get('/readyz')).body.status, 'ready');
    await listsStayFresh(`after-${name}`);
    cluster.checkNodes();
    t.diagnostic(`${name}: afterwards a task submitted on node 0 reached the agent on node 1 in ${await cluster.wakeAcross()} ms`);
  }

  it(`Redis stopped for ${OUTAGE_MS / 1000} s and started again (empty)`, async (t) => {
    await listsStayFresh('before');
    browser = await launchBrowser();
    const page = await signedInPage(browser, cluster.adminKey);
    await page.goto(`${cluster.nodes[0].url}/`);
    await page.waitForSelector('[data-ready=overview]');
    const logsBefore = outageLogs();
    await cluster.workload.survive(t, `Redis stopped ${OUTAGE_MS / 1000} s`, async () => {
      const stoppedAt = Date.now();
      await redis.stop();
      await eventually(async () => (await redisUp(0)) === 0 && (await redisUp(1)) === 0, 10_000, 'both nodes see Redis down');
      for (const node of cluster.nodes) {
        const ready = await node.api.get('/readyz');
        assert.equal(ready.status, 200, 'a node without Redis still serves');
        assert.equal(ready.body.status, 'degraded');
        assert.equal(ready.body.dependencies.redis.up, false);
        // /readyz is never rate-limited: a limited route shows that the limits still apply, per node.
        assert.ok((await node.api.get('/v1/stats')).headers.get('ratelimit-limit'), 'rate limits still apply, per node');
      }
      await listsStayFresh('during');
      const banner = await page.waitForSelector('[data-testid=degraded]', { timeout: 15_000 });
      assert.match(await banner.innerText(), /redis unavailable since/, 'the dashboard says Redis is down');
      t.diagnostic(`during the outage a task submitted on node 0 reached the agent on node 1 in ${await cluster.wakeAcross()} ms`);
      await new Promise((r) => setTimeout(r, Math.max(0, stoppedAt + OUTAGE_MS - Date.now())));
      await redis.start();
    });
    await recovered(t, 'restart');
    await page.waitForSelector('[data-testid=degraded]', { state: 'detached', timeout: 15_000 });
    const logsAfter = outageLogs();
    for (const [i, [down, up]] of logsAfter.entries()) {
      assert.equal(down - logsBefore[i][0], 1, `node ${i} logged the outage once`);
      assert.equal(up - logsBefore[i][1], 1, `node ${i} logged the recovery once`);
    }
  });

  it("a TCP cut of every connection between node 0 and Redis", async (t) => {
    await cluster.workload.survive(t, 'TCP cut to Redis', async () => {
      t.diagnostic(`${cluster.redisProxy.cutAll()} connections cut`);
    });
    await recovered(t, 'cut');
    assert.ok((await metric(cluster.nodes[0], 'fleetd_dependency_reconnects_total{dependency="redis"}'))! >= 4, 'node 0 re-established its Redis connections');
  });

  it('no request was answered 500 on either node', async () => {
    assert.equal(await cluster.answered('500'), 0);
  });
});
