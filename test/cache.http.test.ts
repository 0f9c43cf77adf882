import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startTestServer, type TestServer } from './helpers.js';

describe('cached reads over HTTP', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(() => server.stop());

  it('answers a repeated list read from the cache, with an ETag and 304 on If-None-Match', async () => {
    const { api } = server;
    await api.submit({ type: 'etag-demo' });
    const first = await api.get('/v1/tasks?type=etag-demo');
    const second = await api.get('/v1/tasks?type=etag-demo');
    assert.equal(first.headers.get('x-cache'), 'miss');
    assert.equal(second.headers.get('x-cache'), 'hit');
    assert.deepEqual(second.body, first.body);
    const etag = second.headers.get('etag')!;
    assert.match(etag, /^".+"$/);
    assert.equal(second.headers.get('cache-control'), 'no-cache');
    const notModified = await api.request('GET', '/v1/tasks?type=etag-demo', undefined, { 'if-none-match': etag });
    assert.equal(notModified.status, 304);
    assert.equal(notModified.body, undefined);
  });

  it('sends cached bodies compressed once per encoding, and fresh after a write', async () => {
    const { api } = server;
    for (let i = 0; i < 20; i++) await api.submit({ type: 'zipped', payload: { text: 'a report to summarise '.repeat(10) } });
    const read = async (encoding: string) => {
      const res = await fetch(`${server.url}/v1/tasks?type=zipped`, { headers: { authorization: `Bearer ${server.adminKey}`, 'accept-encoding': encoding } });
      return { encoding: res.headers.get('content-encoding'), cache: res.headers.get('x-cache'), body: await res.json() };
    };
    const plain = await read('identity');
    assert.equal(plain.encoding, null);
    for (const encoding of ['br', 'gzip']) {
      for (let i = 0; i < 2; i++) {
        const got = await read(`${encoding}, identity;q=0.5`);
        assert.equal(got.encoding, encoding);
        assert.equal(got.cache, 'hit');
        assert.deepEqual(got.body, plain.body);
      }
    }
    const added = await api.submit({ type: 'zipped' });
    const after = await read('br');
    assert.equal(after.body.items.length, 21);
    assert.ok(after.body.items.some((t: { id: number }) => t.id === added.id));
  });

  it('never serves a read older than an acknowledged write', async () => {
    const { api } = server;
    const agent = await api.registerAgent(['fresh']);
    const list = () => api.get('/v1/tasks?type=fresh&limit=1000');
    // Readers hammer the cached list while writes land; after each acknowledged write, a read must see it.
    let reading = true;
    const readers = Promise.all(
      Array.from({ length: 2 }, async () => {
        while (reading) assert.equal((await list()).status, 200);
      }),
    );
    try {
      for (let i = 0; i < 30; i++) {
        const task = await api.submit({ type: 'fresh', payload: { i } });
        const seen = await list();
        assert.ok(seen.body.items.some((t: { id: number }) => t.id === task.id), `task ${task.id} missing after its submit`);
        const [claimed] = await api.claim(agent.id);
        assert.equal(claimed.id, task.id);
        const done = await api.post(`/v1/tasks/${task.id}/complete`, { agentId: agent.id, result: { i } });
        assert.equal(done.status, 200);
        const after = await list();
        assert.equal(after.body.items.find((t: { id: number }) => t.id === task.id).status, 'completed');
      }
    } finally {
      reading = false;
      await readers;
    }
  });

  it('caches a finished task until a retry changes it, and never one still in flight', async () => {
    const { api } = server;
    const agent = await api.registerAgent(['retry-me']);
    const task = await api.submit({ type: 'retry-me' });
    assert.equal((await api.get(`/v1/tasks/${task.id}`)).headers.get('x-cache'), 'miss');
    assert.equal((await api.get(`/v1/tasks/${task.id}`)).headers.get('x-cache'), 'miss');
    await api.claim(agent.id);
    await api.post(`/v1/tasks/${task.id}/fail`, { agentId: agent.id, retryable: false });
    const dead = await api.get(`/v1/tasks/${task.id}`);
    assert.equal(dead.body.status, 'dead');
    assert.equal((await api.get(`/v1/tasks/${task.id}`)).headers.get('x-cache'), 'hit');
    const retried = await api.post(`/v1/tasks/${task.id}/retry`);
    assert.equal(retried.status, 200);
    const now = await api.get(`/v1/tasks/${task.id}`);
    assert.equal(now.body.status, 'queued');
  });

  it('caches lock lists until a lock is taken or released', async () => {
    const { api } = server;
    const agent = await api.registerAgent(['locker']);
    await api.get(`/v1/locks?agentId=${agent.id}`);
    const acquired = await api.post('/v1/locks', { agentId: agent.id, resources: ['file:a.txt'], ttlMs: 60_000 });
    assert.equal(acquired.status, 200, JSON.stringify(acquired.body));
    const held = await api.get(`/v1/locks?agentId=${agent.id}`);
    assert.deepEqual(held.body.items.map((l: { id: string }) => l.id), [acquired.body.id]);
    await api.delete(`/v1/locks/${acquired.body.id}`);
    assert.deepEqual((await api.get(`/v1/locks?agentId=${agent.id}`)).body.items, []);
  });

  it('warms the most read keys at the next start', async () => {
    const dataDir = server.dataDir;
    for (let i = 0; i < 3; i++) await server.api.get('/v1/tasks?type=warm-me');
    await server.stop({ keepData: true });
    server = await startTestServer({ dataDir });
    assert.equal((await server.api.get('/v1/tasks?type=warm-me')).headers.get('x-cache'), 'hit');
  });

  it('reports hits, misses, size and evictions at /metrics', async () => {
    const text = (await server.api.get('/metrics')).body as string;
    assert.match(text, /fleetd_cache_requests_total\{result="hit"\} [1-9]/);
    assert.match(text, /fleetd_cache_requests_total\{result="miss"\} [1-9]/);
    assert.match(text, /fleetd_cache_entries [1-9]/);
    assert.match(text, /fleetd_cache_bytes [1-9]/);
    assert.match(text, /fleetd_cache_evictions_total \d/);
    assert.match(text, /fleetd_cache_hit_ratio 0\.\d+/);
  });
});

describe('cached reads over HTTP with a Redis L2', () => {
  it('stays fresh across writes', async () => {
    const server = await startTestServer({ redisUrl: 'redis://127.0.0.1:6379/6' });
    try {
      const { api } = server;
      await api.submit({ type: 'l2' });
      assert.equal((await api.get('/v1/tasks?type=l2')).headers.get('x-cache'), 'miss');
      assert.equal((await api.get('/v1/tasks?type=l2')).headers.get('x-cache'), 'hit');
      const second = await api.submit({ type: 'l2' });
      const after = await api.get('/v1/tasks?type=l2');
      assert.ok(after.body.items.some((t: { id: number }) => t.id === second.id));
    } finally {
      await server.stop();
    }
  });
});
