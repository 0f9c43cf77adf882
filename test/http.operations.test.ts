import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { CHECKPOINT_THREAD_AFTER_COMMITS } from '../src/store/sqlite/database.js';
import { type Api, newAdminKey, startTestServer, type TestServer } from './helpers.js';

describe('HTTP operations', () => {
  let server: TestServer;
  const adminKey = newAdminKey();
  const bearer = { authorization: `Bearer ${adminKey}` };
  let api: Api;
  const lines: Record<string, unknown>[] = [];
  before(async () => {
    const sink = new Writable({
      write(chunk, _enc, done) {
        for (const line of String(chunk).split('\n')) if (line) lines.push(JSON.parse(line));
        done();
      },
    });
    server = await startTestServer({ slowRequestMs: 0, redisUrl: 'redis://:hunter2@127.0.0.1:6379/6', adminKey, sqliteCheckpoints: 'thread' }, { logger: pino({ level: 'info' }, sink) });
    api = server.api;
  });
  after(() => server.stop());

  it('puts an x-request-id on every response and on the log lines of the request', async () => {
    const generated = await api.get('/v1/stats');
    assert.match(generated.headers.get('x-request-id')!, /^[0-9a-f-]{36}$/);
    const given = await api.request('GET', '/v1/nowhere', undefined, { 'x-request-id': 'trace-123' });
    assert.equal(given.status, 404);
    assert.equal(given.headers.get('x-request-id'), 'trace-123');
    const unsafe = await api.request('GET', '/v1/stats', undefined, { 'x-request-id': 'bad id\twith tabs' });
    assert.notEqual(unsafe.headers.get('x-request-id'), 'bad id\twith tabs');
    // slowRequestMs is 0 here, so every request is logged as slow, with its id, route and timings.
    const logged = lines.find((l) => l.reqId === 'trace-123');
    assert.ok(logged, 'no log line carries the request id');
    assert.equal(logged.msg, 'slow request');
    assert.equal(logged.statusCode, 404);
    assert.equal(typeof logged.totalMs, 'number');
    const routed = lines.find((l) => l.reqId === generated.headers.get('x-request-id'));
    assert.equal(routed?.route, '/v1/stats');
  });

  it('compresses bodies from 8 KiB with brotli or gzip, and leaves smaller ones alone', async () => {
    for (let i = 0; i < 20; i++) await api.submit({ type: 'zip', payload: { text: 'lorem ipsum dolor sit amet '.repeat(4) } });
    const path = `${server.url}/v1/tasks?type=zip`;
    const plain = await fetch(path, { headers: { ...bearer, 'accept-encoding': 'identity' } });
    const plainBytes = (await plain.arrayBuffer()).byteLength;
    assert.equal(plain.headers.get('content-encoding'), null);
    for (const encoding of ['br', 'gzip']) {
      const res = await fetch(path, { headers: { ...bearer, 'accept-encoding': encoding } });
      assert.equal(res.headers.get('content-encoding'), encoding);
      const body = await res.json(); // fetch decodes it
      assert.equal(body.items.length, 20);
    }
    const small = await fetch(`${server.url}/v1/tasks?type=zip&limit=5`, { headers: { ...bearer, 'accept-encoding': 'br' } });
    const smallBytes = (await small.arrayBuffer()).byteLength;
    assert.equal(small.headers.get('content-encoding'), null);
    assert.ok(plainBytes >= 8 * 1024 && smallBytes > 1024 && smallBytes < 8 * 1024, `${plainBytes} and ${smallBytes} bytes`);
  });

  it('compresses answers up to 64 KiB in one call and larger ones as a stream, each whole', async () => {
    const batch = (n: number, bytes: number) => ({ tasks: Array.from({ length: n }, (_, i) => ({ type: 'zip-answer', payload: { i, text: 'x'.repeat(bytes) } })) });
    for (const [n, bytes] of [
      [20, 500],
      [40, 2_000],
    ]) {
      for (const encoding of ['br', 'gzip']) {
        const res = await fetch(`${server.url}/v1/tasks/batch`, {
          method: 'POST',
          headers: { ...bearer, 'content-type': 'application/json', 'accept-encoding': encoding },
          body: JSON.stringify(batch(n, bytes)),
        });
        assert.equal(res.status, 201);
        assert.equal(res.headers.get('content-encoding'), encoding);
        const text = await res.text(); // fetch decodes it
        const body = JSON.parse(text);
        assert.deepEqual(body.items.map((item: any) => item.task.payload.i), [...Array(n).keys()]);
        // 40 tasks of 2 KB answer over 64 KiB: the stream's path; 20 of 500 bytes, the single call's.
        assert.ok(n === 40 ? text.length > 64 * 1024 : text.length > 8 * 1024 && text.length < 64 * 1024, `${text.length} bytes`);
      }
    }
  });

  it('marks live data no-store', async () => {
    assert.equal((await api.get('/v1/stats')).headers.get('cache-control'), 'no-store');
    const agent = await api.registerAgent(['live']);
    assert.equal((await api.get(`/v1/agents/${agent.id}`)).headers.get('cache-control'), 'no-store');
    assert.equal((await api.post(`/v1/agents/${agent.id}/heartbeat`)).headers.get('cache-control'), 'no-store');
  });

  it('exports Prometheus metrics: request latency by route and status, tasks, queue depth, agents, durations, process', async () => {
    const agent = await api.registerAgent(['metered']);
    await api.submit({ type: 'metered', priority: 7 });
    await api.submit({ type: 'metered', priority: 7 });
    const [task] = await api.claim(agent.id);
    await api.post(`/v1/tasks/${task.id}/complete`, { agentId: agent.id });
    await api.get('/v1/tasks/999999');
    await api.get('/v1/no-such-route');
    await api.request('HEAD', '/v1/stats');
    const res = await api.get('/metrics');
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type')!, /text\/plain/);
    const text = res.body as string;
    assert.match(text, /fleetd_http_request_duration_seconds_bucket\{le="[\d.]+",method="POST",route="\/v1\/tasks",status_code="201"\}/);
    assert.match(text, /fleetd_http_request_duration_seconds_count\{method="GET",route="\/v1\/tasks\/:id",status_code="404"\} 1/);
    // A path no route matches is one series, whatever the path; a GET route's HEAD is its own.
    assert.match(text, /fleetd_http_request_duration_seconds_count\{method="GET",route="unmatched",status_code="404"\} [1-9]\d*$/m);
    assert.match(text, /fleetd_http_request_duration_seconds_count\{method="HEAD",route="\/v1\/stats",status_code="200"\} [1-9]\d*$/m);
    assert.match(text, /fleetd_queue_depth\{type="metered",priority="7"\} 1/);
    assert.match(text, /fleetd_tasks\{status="completed"\} 1/);
    assert.match(text, /fleetd_agents\{status="online"\} [1-9]/);
    assert.match(text, /fleetd_task_claim_wait_seconds_count\{type="metered"\} 1/);
    assert.match(text, /fleetd_task_run_seconds_count\{type="metered"\} 1/);
    assert.match(text, /nodejs_eventloop_lag_seconds \d/);
    assert.match(text, /nodejs_heap_size_used_bytes \d/);
    assert.match(text, /process_resident_memory_bytes \d/);
  });

  it("exports SQLite's commits, the writes they carried and the time they took, which grow with every write", async () => {
    const committed = async () => {
      const text = (await api.get('/metrics')).body as string;
      const sample = (name: string) => Number(new RegExp(`^${name}\\{driver="sqlite"\\} (\\d+)$`, 'm').exec(text)?.[1]);
      const seconds = Number(/^fleetd_store_commit_seconds_total\{driver="sqlite"\} ([0-9.e+-]+)$/m.exec(text)?.[1]);
      return { commits: sample('fleetd_store_commits_total'), writes: sample('fleetd_store_writes_total'), seconds };
    };
    await api.submit({ type: 'counted' });
    const before = await committed();
    assert.ok(before.commits >= 1 && before.writes >= before.commits, `commits and writes after a submit: ${JSON.stringify(before)}`);
    for (let i = 0; i < 3; i++) await api.submit({ type: 'counted' });
    const after = await committed();
    assert.ok(after.commits >= before.commits + 3, `three submits, one after another, are three commits at least: ${JSON.stringify({ before, after })}`);
    assert.ok(after.writes >= before.writes + 3, `and three writes at least: ${JSON.stringify({ before, after })}`);
    assert.ok(before.seconds > 0 && after.seconds > before.seconds, `the time the event loop spent committing grows too: ${JSON.stringify({ before, after })}`);
  });

  it("exports the WAL checkpoints SQLite's checkpoint thread ran (FLEETD_SQLITE_CHECKPOINTS=thread), once the store has committed enough to start it", async () => {
    const sample = async (name: string) => {
      const value = Number(new RegExp(`^${name}\\{driver="sqlite"\\} (\\d+)$`, 'm').exec((await api.get('/metrics')).body as string)?.[1]);
      assert.ok(Number.isFinite(value), `${name}{driver="sqlite"} is exported`);
      return value;
    };
    while ((await sample('fleetd_store_commits_total')) <= CHECKPOINT_THREAD_AFTER_COMMITS) {
      await Promise.all(Array.from({ length: 10 }, () => api.submit({ type: 'checkpointed', payload: { text: 'x'.repeat(2_000) } })));
    }
    const deadline = Date.now() + 10_000;
    while ((await sample('fleetd_store_checkpoints_total')) < 1) {
      assert.ok(Date.now() < deadline, 'a checkpoint within 10 s of the thread starting');
      await new Promise((r) => setTimeout(r, 50));
    }
  });

  it('serves the OpenAPI document built from the route schemas, and the docs UI', async () => {
    const doc = await api.get('/openapi.json');
    assert.equal(doc.status, 200);
    assert.match(doc.body.openapi, /^3\./);
    assert.ok(doc.body.paths['/v1/tasks'].post.requestBody, 'POST /v1/tasks has no request body schema');
    assert.ok(doc.body.paths['/v1/tasks/{id}'].get.responses['200']);
    assert.ok(doc.body.paths['/v1/agents/{id}/heartbeat']);
    const ui = await fetch(`${server.url}/docs/`);
    assert.equal(ui.status, 200);
    assert.match(ui.headers.get('content-type')!, /text\/html/);
  });

  it('shows the resolved configuration with secrets masked', async () => {
    const res = await api.get('/v1/config');
    assert.equal(res.status, 200);
    assert.equal(res.body.slowRequestMs, 0);
    assert.equal(res.body.redisUrl, 'redis://:***@127.0.0.1:6379/6');
    assert.equal(res.body.adminKey, '***');
    assert.ok(!JSON.stringify(res.body).includes('hunter2'));
    assert.ok(!JSON.stringify(res.body).includes(adminKey));
  });

  it('keeps secrets out of its logs: the admin key, agent tokens and ?token= credentials', async () => {
    const agent = await api.registerAgent(['quiet']);
    // A WebSocket route asked over plain HTTP, with the token in its query: refused, and logged as slow (slowRequestMs 0).
    const viaQuery = await api.as(undefined).get(`/v1/agents/${agent.id}/stream?token=${agent.token}`);
    assert.equal(viaQuery.status, 400);
    await api.as(agent.token).post(`/v1/agents/${agent.id}/heartbeat`);
    const logged = JSON.stringify(lines);
    assert.ok(logged.includes('token=***'), 'the request with ?token= was not logged, so this test proves nothing');
    assert.ok(!logged.includes(agent.token), 'an agent token reached the logs');
    assert.ok(!logged.includes(adminKey), 'the admin key reached the logs');
  });
});

describe('request body limits per route', () => {
  it('refuses a control request far larger than its few fields with 413, before reading it', async () => {
    const server = await startTestServer();
    try {
      const agent = await server.api.registerAgent(['big']);
      const huge = { agentId: agent.id, max: 1, padding: 'x'.repeat(8 * 1024) };
      const claim = await server.api.post('/v1/tasks/claim', huge);
      assert.equal(claim.status, 413);
      assert.equal(claim.body.error.code, 'FLEETD_ERR_BODY_TOO_LARGE');
      // A task payload of the same size is fine: that route has the payload-sized limit.
      const task = await server.api.post('/v1/tasks', { type: 'big', payload: { padding: 'x'.repeat(8 * 1024) } });
      assert.equal(task.status, 201);
    } finally {
      await server.stop();
    }
  });
});
