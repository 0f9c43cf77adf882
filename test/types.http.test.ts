import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { drivers, startTestServer, stopAndDrop, type TestServer } from './helpers.js';

let typeSeq = 0;
const freshType = () => `fair-${++typeSeq}`;

for (const [driver, store] of Object.entries(drivers)) {
  describe(`task types over HTTP (${driver})`, { timeout: 120_000 }, () => {
    let server: TestServer;
    before(async () => {
      server = await startTestServer(store());
    });
    after(async () => {
      if (server) await stopAndDrop(server);
    });

    const put = (type: string, body: unknown) => server.api.request('PUT', `/v1/types/${type}`, body);

    it('stores a policy, shows it with counts and held-back tasks, and a lease ending wakes a waiting claim', async () => {
      const { api } = server;
      const type = freshType();
      const set = await put(type, { maxConcurrency: 1 });
      assert.equal(set.status, 200);
      assert.deepEqual(set.body.policy, { maxConcurrency: 1, maxConcurrencyPerKey: null, rateLimit: null, keyWeights: {}, budget: null });
      const a = await api.registerAgent([type], { maxConcurrency: 5 });
      const b = await api.registerAgent([type], { maxConcurrency: 5 });
      const first = await api.submit({ type, payload: { n: 1 } });
      const second = await api.submit({ type, payload: { n: 2 } });
      const [taken] = await api.claim(a.id, 5);
      assert.equal(taken.id, first.id);
      assert.deepEqual(await api.claim(b.id, 5), [], 'the limit holds the second back');

      const listed = (await api.get('/v1/types')).body.items.find((t: any) => t.type === type);
      assert.equal(listed.counts.leased, 1);
      assert.equal(listed.counts.queued, 1);
      assert.equal(listed.heldBack.maxConcurrency, 1);
      assert.equal(listed.heldBack.total, 1);
      assert.equal(listed.paused, false);
      const detail = (await api.get(`/v1/types/${type}`)).body;
      assert.deepEqual(detail.keys, [{ key: null, queued: 1, leased: 1, heldBy: 'maxConcurrency' }]);

      // b waits; the end of a's lease frees the slot and wakes it, long before its wait is over.
      const waiting = api.claim(b.id, 5, 30_000);
      await new Promise((r) => setTimeout(r, 300));
      const started = Date.now();
      assert.equal((await api.post(`/v1/tasks/${taken.id}/complete`, { agentId: a.id, result: 'ok' })).status, 200);
      const woken = await waiting;
      assert.deepEqual(woken.map((t: any) => t.id), [second.id]);
      assert.ok(Date.now() - started < 15_000, 'woken by the lease ending, not by the wait running out');
      assert.equal(woken[0].attempts, 1, 'being held back spent no attempt');
    });

    it('two slots freed in one batch of completions wake two waiting claims', async () => {
      const { api } = server;
      const type = freshType();
      assert.equal((await put(type, { maxConcurrency: 2 })).status, 200);
      const a = await api.registerAgent([type], { maxConcurrency: 5 });
      const b = await api.registerAgent([type], { maxConcurrency: 1 });
      const c = await api.registerAgent([type], { maxConcurrency: 1 });
      for (let n = 0; n < 4; n++) await api.submit({ type, payload: { n } });
      const taken = await api.claim(a.id, 2);
      assert.equal(taken.length, 2);
      const waiting = [api.claim(b.id, 1, 30_000), api.claim(c.id, 1, 30_000)];
      await new Promise((r) => setTimeout(r, 300));
      const started = Date.now();
      const done = await api.post('/v1/tasks/complete', { agentId: a.id, items: taken.map((t: any) => ({ op: 'complete', id: t.id, result: 'ok' })) });
      assert.equal(done.status, 200, JSON.stringify(done.body));
      const woken = await Promise.all(waiting);
      assert.deepEqual(woken.map((tasks) => tasks.length), [1, 1], 'each waiting claim got one of the two freed slots');
      assert.ok(Date.now() - started < 15_000, 'both woken by the leases ending, not by their waits running out');
    });

    it('pauses a type (its tasks stay queued, the leased one finishes) and resume hands them out at once', async () => {
      const { api } = server;
      const type = freshType();
      const agent = await api.registerAgent([type], { maxConcurrency: 5 });
      const running = await api.submit({ type });
      const [leased] = await api.claim(agent.id, 1);
      assert.equal(leased.id, running.id);
      const queued = await api.submit({ type });
      const paused = await api.post(`/v1/types/${type}/pause`, { reason: 'provider answered 429' });
      assert.equal(paused.status, 200);
      assert.equal(paused.body.paused, true);
      assert.equal(paused.body.pauses[0].reason, 'provider answered 429');
      assert.equal(paused.body.pauses[0].until, null);
      assert.deepEqual(await api.claim(agent.id, 5), []);
      assert.equal((await api.post(`/v1/tasks/${leased.id}/complete`, { agentId: agent.id })).status, 200, 'a lease held when the pause began finishes');
      assert.equal((await api.get(`/v1/types/${type}`)).body.heldBack.paused, 1);

      const waiting = api.claim(agent.id, 5, 30_000);
      await new Promise((r) => setTimeout(r, 300));
      const resumed = await api.post(`/v1/types/${type}/resume`, {});
      assert.equal(resumed.status, 200);
      assert.equal(resumed.body.paused, false);
      assert.deepEqual((await waiting).map((t: any) => t.id), [queued.id]);
    });

    it('a pause for a while ends by itself and wakes the waiting claim; a key pause holds only that key', async () => {
      const { api } = server;
      const type = freshType();
      const agent = await api.registerAgent([type], { maxConcurrency: 5 });
      const x = await api.submit({ type, concurrencyKey: 'tenant-x' });
      const y = await api.submit({ type, concurrencyKey: 'tenant-y' });
      assert.equal(x.concurrencyKey, 'tenant-x');
      assert.equal((await api.post(`/v1/types/${type}/pause`, { key: 'tenant-x', forMs: 1_500 })).status, 200);
      assert.deepEqual((await api.claim(agent.id, 5)).map((t: any) => t.id), [y.id]);
      const started = Date.now();
      const woken = await api.claim(agent.id, 5, 30_000);
      assert.deepEqual(woken.map((t: any) => t.id), [x.id]);
      assert.ok(Date.now() - started >= 1_000, 'not before the pause ends');
      assert.ok(Date.now() - started < 20_000, 'woken when the pause ended, not at the end of the wait');
    });

    it('a rate limit lets count start per window; the next goes when the window allows', async () => {
      const { api } = server;
      const type = freshType();
      assert.equal((await put(type, { rateLimit: { count: 2, perMs: 1_500 } })).status, 200);
      const agent = await api.registerAgent([type], { maxConcurrency: 10 });
      for (let i = 0; i < 3; i++) await api.submit({ type, payload: { i } });
      const first = await api.claim(agent.id, 10);
      assert.equal(first.length, 2);
      for (const t of first) await api.post(`/v1/tasks/${t.id}/complete`, { agentId: agent.id });
      const started = Date.now();
      const third = await api.claim(agent.id, 10, 30_000);
      assert.equal(third.length, 1);
      assert.ok(Date.now() - started >= 1_000, 'the window had to pass');
      assert.equal((await api.get(`/v1/types/${type}`)).body.policy.rateLimit.perKey, false);
    });

    it('sums the usage agents report with completions and failures, per type and key, over the hour and the day', async () => {
      const { api } = server;
      const type = freshType();
      const agent = await api.registerAgent([type], { maxConcurrency: 10 });
      await api.submit({ type, concurrencyKey: 'tenant-a' });
      await api.submit({ type, concurrencyKey: 'tenant-a' });
      await api.submit({ type, concurrencyKey: 'tenant-b' });
      await api.submit({ type });
      const tasks = await api.claim(agent.id, 10);
      assert.equal(tasks.length, 4);
      const byKey = (key: string | null) => tasks.filter((t: any) => t.concurrencyKey === key);
      const [a1, a2] = byKey('tenant-a');
      const usage = { inputTokens: 1000, outputTokens: 200, costUsd: 0.25, model: 'model-x' };
      assert.equal((await api.post(`/v1/tasks/${a1.id}/complete`, { agentId: agent.id, result: 'ok', usage })).status, 200);
      assert.equal((await api.post(`/v1/tasks/${a2.id}/fail`, { agentId: agent.id, error: 'boom', usage: { inputTokens: 500 } })).status, 200);
      assert.equal((await api.post(`/v1/tasks/${byKey('tenant-b')[0].id}/complete`, { agentId: agent.id, usage: { outputTokens: 7, costUsd: 0.5 } })).status, 200);

      // Negative numbers are refused, and the completion with them does not happen.
      const unkeyed = byKey(null)[0];
      const bad = await api.post(`/v1/tasks/${unkeyed.id}/complete`, { agentId: agent.id, usage: { inputTokens: -1 } });
      assert.equal(bad.status, 400);
      assert.equal(bad.body.error.code, 'FLEETD_ERR_VALIDATION');
      assert.equal((await api.post(`/v1/tasks/${unkeyed.id}/complete`, { agentId: agent.id, usage: { costUsd: -0.01 } })).status, 400);
      assert.equal((await api.post(`/v1/tasks/${unkeyed.id}/fail`, { agentId: agent.id, usage: { outputTokens: -3 } })).status, 400);
      assert.equal((await api.post(`/v1/tasks/${unkeyed.id}/release`, { agentId: agent.id, delayMs: 0, usage: { inputTokens: -1 } })).status, 400);
      assert.equal((await api.post(`/v1/tasks/${unkeyed.id}/complete`, { agentId: agent.id, usage: { inputTokens: 1.5 } })).status, 400, 'tokens are whole');
      assert.equal((await api.post(`/v1/tasks/${unkeyed.id}/complete`, { agentId: agent.id, usage: { tokens: 5 } })).status, 400, 'an unknown field');
      const badBatch = await api.post('/v1/tasks/complete', { agentId: agent.id, items: [{ op: 'complete', id: unkeyed.id, usage: { costUsd: -1 } }] });
      assert.equal(badBatch.status, 400);
      assert.equal(badBatch.body.error.code, 'FLEETD_ERR_VALIDATION');
      assert.equal((await api.get(`/v1/tasks/${unkeyed.id}`)).body.status, 'leased');

      const detail = (await api.get(`/v1/types/${type}`)).body;
      assert.deepEqual(detail.usage.hour, { inputTokens: 1500, outputTokens: 207, costUsd: 0.75, reports: 3 });
      assert.deepEqual(detail.usage.day, detail.usage.hour);
      const keys = Object.fromEntries(detail.usage.keys.map((k: any) => [k.key, k.day]));
      assert.deepEqual(keys['tenant-a'], { inputTokens: 1500, outputTokens: 200, costUsd: 0.25, reports: 2 });
      assert.deepEqual(keys['tenant-b'], { inputTokens: 0, outputTokens: 7, costUsd: 0.5, reports: 1 });
    });

    it('shows the usage per type and key in /v1/stats and /metrics, in a format promtool accepts', async () => {
      const { api } = server;
      const type = freshType();
      const agent = await api.registerAgent([type], { maxConcurrency: 10 });
      await api.submit({ type, concurrencyKey: 'tenant-a' });
      await api.submit({ type, concurrencyKey: 'tenant-b' });
      await api.submit({ type });
      const tasks = await api.claim(agent.id, 10);
      const byKey = (key: string | null) => tasks.find((t: any) => t.concurrencyKey === key);
      await api.post(`/v1/tasks/${byKey('tenant-a').id}/complete`, { agentId: agent.id, usage: { inputTokens: 1000, outputTokens: 200, costUsd: 0.25 } });
      await api.post(`/v1/tasks/${byKey('tenant-b').id}/fail`, { agentId: agent.id, usage: { inputTokens: 30, costUsd: 0.5 } });
      await api.post(`/v1/tasks/${byKey(null).id}/complete`, { agentId: agent.id, usage: { outputTokens: 4 } });

      const stats = (await api.get('/v1/stats')).body;
      const mine = stats.usage.types.find((t: any) => t.type === type);
      assert.deepEqual(mine.hour, { inputTokens: 1030, outputTokens: 204, costUsd: 0.75, reports: 3 });
      assert.deepEqual(mine.day, mine.hour);
      assert.deepEqual(mine.keys.map((k: any) => k.key), ['tenant-b', 'tenant-a', null], 'keys by most spent (null: no key)');
      assert.deepEqual(mine.keys[1].hour, { inputTokens: 1000, outputTokens: 200, costUsd: 0.25, reports: 1 });
      assert.ok(stats.usage.day.inputTokens >= 1030, 'the fleet sums include the type');

      const metrics = (await api.get('/metrics')).body as string;
      assert.match(metrics, new RegExp(`fleetd_usage_tokens\\{type="${type}",window="hour",direction="input"\\} 1030\n`));
      assert.match(metrics, new RegExp(`fleetd_usage_tokens\\{type="${type}",window="day",direction="output"\\} 204\n`));
      assert.match(metrics, new RegExp(`fleetd_usage_cost_usd\\{type="${type}",window="day"\\} 0.75\n`));
      assert.match(metrics, new RegExp(`fleetd_usage_reports\\{type="${type}",window="hour"\\} 3\n`));
      assert.match(metrics, new RegExp(`fleetd_usage_key_tokens\\{type="${type}",key="tenant-a",window="hour",direction="input"\\} 1000\n`));
      assert.match(metrics, new RegExp(`fleetd_usage_key_cost_usd\\{type="${type}",key="tenant-b",window="day"\\} 0.5\n`));
      // promtool parses the whole text (a parse error is "error while linting") and lints each metric:
      // fleetd's own pass; the only complaints are about prom-client's default Node.js gauges.
      const promtool = spawnSync('promtool', ['check', 'metrics'], { input: metrics, encoding: 'utf8' });
      const complaints = `${promtool.stdout}${promtool.stderr}`.split('\n').filter((line) => line.trim() !== '');
      assert.ok(promtool.status === 0 || complaints.length > 0, 'promtool failed without saying why');
      assert.deepEqual(complaints.filter((line) => !line.startsWith('nodejs_')), [], 'promtool complains about fleetd\'s metrics');
    });

    it('a spent budget holds the rest of a key back like a rate limit, and other keys go', async () => {
      const { api } = server;
      const type = freshType();
      const set = await put(type, { budget: { tokensPerHour: 100, perKey: true } });
      assert.deepEqual(set.body.policy.budget, { tokensPerHour: 100, costPerDay: null, perKey: true });
      const agent = await api.registerAgent([type], { maxConcurrency: 10 });
      const spender = await api.submit({ type, concurrencyKey: 'big-spender' });
      const [got] = await api.claim(agent.id, 1);
      assert.equal(got.id, spender.id);
      await api.post(`/v1/tasks/${got.id}/complete`, { agentId: agent.id, usage: { inputTokens: 90, outputTokens: 20 } });
      const more = await api.submit({ type, concurrencyKey: 'big-spender' });
      const other = await api.submit({ type, concurrencyKey: 'thrifty' });
      assert.deepEqual((await api.claim(agent.id, 10)).map((t: any) => t.id), [other.id]);
      const view = (await api.get(`/v1/types/${type}`)).body;
      assert.equal(view.heldBack.budget, 1);
      assert.deepEqual(view.keys.find((k: any) => k.key === 'big-spender'), { key: 'big-spender', queued: 1, leased: 0, heldBy: 'budget' });
      assert.equal((await api.get(`/v1/tasks/${more.id}`)).body.status, 'queued');
    });

    it('refuses bad input with a clear error and changes nothing', async () => {
      const { api } = server;
      const type = freshType();
      assert.equal((await put(type, { maxConcurrency: 3 })).status, 200);
      for (const body of [
        { maxConcurrency: 0 },
        { maxConcurrency: -1 },
        { maxConcurrencyPerKey: 0 },
        { maxConcurrency: 1.5 },
        { rateLimit: { count: 1, perMs: 5 } },
        { rateLimit: { count: 1, perMs: 9 } },
        { rateLimit: { count: 0, perMs: 1000 } },
        { rateLimit: { perMs: 1000 } },
        { keyWeights: { a: 0 } },
        { maxConcurrency: 2, surprise: true },
        { budget: { tokensPerHour: 0 } },
        { budget: { costPerDay: 0 } },
        { budget: { costPerDay: -1 } },
        { budget: {} },
      ]) {
        const res = await put(type, body);
        assert.equal(res.status, 400, JSON.stringify(body));
        assert.equal(res.body.error.code, 'FLEETD_ERR_VALIDATION');
      }
      assert.equal((await api.get(`/v1/types/${type}`)).body.policy.maxConcurrency, 3, 'unchanged');
      assert.equal((await put(type, { maxConcurrency: 3, rateLimit: { count: 1, perMs: 10 } })).status, 200, '10 ms is the least perMs');

      const ghost = await api.post('/v1/types/no-such-type/pause', { forMs: 1000 });
      assert.equal(ghost.status, 404);
      assert.equal(ghost.body.error.code, 'FLEETD_ERR_NOT_FOUND');
      assert.equal((await api.post('/v1/types/no-such-type/resume', {})).status, 404);
      assert.equal((await api.get('/v1/types/no-such-type')).status, 404);
      assert.equal((await api.post(`/v1/types/${type}/pause`, { forMs: 0 })).status, 400);
      assert.equal((await api.post(`/v1/types/${type}/pause`, { key: '' })).status, 400);
      assert.equal((await api.get(`/v1/types/${type}`)).body.pauses.length, 0, 'no pause was stored');
      const badKey = await api.post('/v1/tasks', { type, concurrencyKey: '' });
      assert.equal(badKey.status, 400);
      assert.equal((await api.get(`/v1/types/${type}`)).body.counts.queued, 0);
      assert.equal((await api.request('PUT', '/v1/types/bad%20name', { maxConcurrency: 1 })).status, 400);
    });

    it('a policy needs an admin key; a submit key may read types', async () => {
      const { api } = server;
      const key = (await api.post('/v1/keys', { name: 'submitter', scope: 'submit' })).body.secret;
      const submitter = api.as(key);
      const refused = await submitter.request('PUT', `/v1/types/${freshType()}`, { maxConcurrency: 1 });
      assert.equal(refused.status, 403);
      assert.equal((await submitter.get('/v1/types')).status, 200);
    });
  });
}
