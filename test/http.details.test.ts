import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { eventually, kill9, startTestServer, tempDir, type TestServer } from './helpers.js';

const packageVersion = JSON.parse(readFileSync(join(import.meta.dirname, '..', 'package.json'), 'utf8')).version;

describe('HTTP details', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(() => server.stop());

  it('answers a wrong method on a known path with 405 and Allow, and an unknown path with 404', async () => {
    const cases: [string, string, string][] = [
      ['DELETE', '/v1/tasks', 'GET, HEAD, POST'],
      ['GET', '/v1/tasks/1/complete', 'POST'],
      ['GET', '/v1/keys/key_1', 'DELETE'],
      ['PUT', '/v1/tasks/12', 'GET, HEAD, DELETE'],
      ['POST', '/healthz', 'GET, HEAD'],
    ];
    for (const [method, path, allow] of cases) {
      const res = await server.api.request(method, path);
      assert.equal(res.status, 405, `${method} ${path}`);
      assert.equal(res.headers.get('allow'), allow);
      assert.equal(res.body.error.code, 'FLEETD_ERR_METHOD_NOT_ALLOWED');
      assert.deepEqual(res.body.error.details.allowed, allow.split(', '));
    }
    const unknown = await server.api.request('DELETE', '/v1/nowhere');
    assert.equal(unknown.status, 404);
    assert.equal(unknown.body.error.code, 'FLEETD_ERR_NOT_FOUND');
  });

  it('names the limit in a 413', async () => {
    const claim = await server.api.post('/v1/tasks/claim', { agentId: 'a', padding: 'x'.repeat(8_000) });
    assert.equal(claim.status, 413);
    assert.equal(claim.body.error.code, 'FLEETD_ERR_BODY_TOO_LARGE');
    assert.equal(claim.body.error.details.limitBytes, 4096);
    assert.match(claim.body.error.message, /over this route's limit of 4096 bytes/);
    assert.ok(claim.body.error.details.sentBytes > 8_000);
  });

  it('never rate-limits /healthz and /readyz, and /healthz says the version and uptime', async () => {
    const limited = await startTestServer({ rateLimitRead: 5 });
    try {
      await probesUnlimited(limited);
    } finally {
      await limited.stop();
    }
  });

  it('answers a submit without its payload with ?return=minimal', async () => {
    const payload = { blob: 'x'.repeat(50_000) };
    const minimal = await server.api.post('/v1/tasks?return=minimal', { type: 'big', payload });
    assert.equal(minimal.status, 201);
    assert.equal(minimal.body.created, true);
    assert.equal(minimal.body.task.type, 'big');
    assert.equal(minimal.body.task.status, 'queued');
    assert.deepEqual(['payload', 'result', 'error'].filter((k) => k in minimal.body.task), []);
    assert.ok(JSON.stringify(minimal.body).length < 1_000);
    // Stored whole all the same.
    assert.deepEqual((await server.api.get(`/v1/tasks/${minimal.body.task.id}`)).body.payload, payload);
    const batch = await server.api.post('/v1/tasks/batch?return=minimal', { tasks: [{ type: 'big', payload }, { type: 'big', payload }] });
    assert.equal(batch.status, 201);
    assert.deepEqual(batch.body.items.map((i: any) => 'payload' in i.task), [false, false]);
    const whole = await server.api.post('/v1/tasks', { type: 'big', payload });
    assert.deepEqual(whole.body.task.payload, payload);
    const wrong = await server.api.post('/v1/tasks?return=everything', { type: 'big' });
    assert.equal(wrong.status, 400);
  });

  it("answers an agent's completion, failure, extension and release without the payload with ?return=minimal", async () => {
    const payload = { prompt: 'p'.repeat(50_000) };
    const type = 'minimal-writes';
    const agent = await server.api.registerAgent([type], { maxConcurrency: 10 });
    const ids: number[] = [];
    for (let i = 0; i < 4; i++) ids.push((await server.api.submit({ type, payload, maxAttempts: 1 })).id);
    assert.equal((await server.api.claim(agent.id, 4)).length, 4);
    const [toExtend, toRelease, toFail, toComplete] = ids;
    const minimalOf = async (op: string, id: number, body: object, status: string) => {
      const res = await server.api.post(`/v1/tasks/${id}/${op}?return=minimal`, { agentId: agent.id, ...body });
      assert.equal(res.status, 200, `${op}: ${JSON.stringify(res.body)}`);
      assert.deepEqual([res.body.id, res.body.status], [id, status], op);
      assert.deepEqual(['payload', 'result', 'error'].filter((k) => k in res.body), [], op);
      assert.ok(JSON.stringify(res.body).length < 1_000, op);
      return res.body;
    };

    const before = (await server.api.get(`/v1/tasks/${toExtend}`)).body.leaseExpiresAt;
    const extended = await minimalOf('extend', toExtend, { leaseMs: 600_000 }, 'leased');
    assert.ok(Date.parse(extended.leaseExpiresAt) > Date.parse(before), 'the lease was renewed');
    await minimalOf('release', toRelease, { delayMs: 0, reason: 'busy' }, 'queued');
    await minimalOf('fail', toFail, { error: { message: 'no' }, retryable: false }, 'dead');
    await minimalOf('complete', toComplete, { result: { ok: true } }, 'completed');
    // Written as without the query, and each task still holds its payload.
    const stored = await Promise.all(ids.map(async (id) => (await server.api.get(`/v1/tasks/${id}`)).body));
    assert.deepEqual(
      stored.map((t) => [t.status, t.result, t.error?.message ?? null]),
      [
        ['leased', null, null],
        ['queued', null, 'busy'],
        ['dead', null, 'no'],
        ['completed', { ok: true }, null],
      ],
    );
    for (const t of stored) assert.deepEqual(t.payload, payload);
    assert.equal(stored[0].leaseExpiresAt, extended.leaseExpiresAt);

    // Without it, the task whole; a wrong value is refused and changes nothing.
    const whole = await server.api.post(`/v1/tasks/${toExtend}/extend`, { agentId: agent.id });
    assert.deepEqual(whole.body.payload, payload);
    const wrong = await server.api.post(`/v1/tasks/${toExtend}/complete?return=everything`, { agentId: agent.id, result: 1 });
    assert.equal(wrong.status, 400);
    assert.equal(wrong.body.error.code, 'FLEETD_ERR_VALIDATION');
    assert.equal((await server.api.get(`/v1/tasks/${toExtend}`)).body.status, 'leased');
  });

  it('answers submits and claims, written as text with their payloads as stored, as JSON, compressed when large', async () => {
    // Escapes and astral characters: stored as JSON.stringify writes the payload, and answered so.
    const payloadJson = JSON.stringify({ prompt: 'é \u{1F600} "quoted" \\ \n\u2028'.repeat(2_000), n: 1.5e-7 });
    const api = server.api;
    const agent = await api.registerAgent(['spliced']);
    const submitted = await fetch(`${api.base}/v1/tasks`, {
      method: 'POST',
      headers: { authorization: `Bearer ${api.key}`, 'content-type': 'application/json', 'accept-encoding': 'br' },
      body: `{"type":"spliced","payload":${payloadJson}}`,
    });
    assert.equal(submitted.status, 201);
    assert.equal(submitted.headers.get('content-type'), 'application/json; charset=utf-8');
    assert.equal(submitted.headers.get('content-encoding'), 'br');
    const submittedText = await submitted.text();
    assert.ok(submittedText.includes(`"payload":${payloadJson}`), 'the submit answers the payload as stored');
    assert.equal(JSON.parse(submittedText).task.payload.prompt, JSON.parse(payloadJson).prompt);
    const minimal = await api.post('/v1/tasks?return=minimal', { type: 'spliced', payload: 1 });
    assert.equal(minimal.headers.get('content-type'), 'application/json; charset=utf-8');
    const asAgent = api.as(agent.token);
    const claimed = await asAgent.post('/v1/tasks/claim', { agentId: agent.id, max: 1 });
    assert.equal(claimed.status, 200);
    assert.equal(claimed.headers.get('content-type'), 'application/json; charset=utf-8');
    assert.equal(JSON.stringify(claimed.body.tasks[0].payload), payloadJson);
    assert.equal(claimed.body.tasks[0].status, 'leased');
    const next = await asAgent.post('/v1/tasks/complete', { agentId: agent.id, items: [{ op: 'complete', id: claimed.body.tasks[0].id, result: 'ok' }], claim: { max: 1 } });
    assert.equal(next.status, 200);
    assert.equal(next.headers.get('content-type'), 'application/json; charset=utf-8');
    assert.deepEqual(next.body.items.map((i: any) => i.status), ['completed']);
    assert.deepEqual(next.body.tasks.map((t: any) => t.payload), [1]);
    // A completion does not read its payload back; the single route's answer shows the task whole.
    const done = await asAgent.post(`/v1/tasks/${next.body.tasks[0].id}/complete`, { agentId: agent.id, result: { r: 2 } });
    assert.equal(done.status, 200);
    assert.deepEqual([done.body.status, done.body.payload, done.body.result], ['completed', 1, { r: 2 }]);
  });
});

/** Probes answer however many come; the same client's other reads are limited. */
async function probesUnlimited(server: TestServer): Promise<void> {
  const replies = await Promise.all(Array.from({ length: 30 }, (_, i) => server.api.get(i % 2 ? '/healthz' : '/readyz')));
  assert.deepEqual(new Set(replies.map((r) => r.status)), new Set([200]));
  for (const r of replies) assert.equal(r.headers.get('ratelimit-limit'), null);
  const health = replies[1].body;
  assert.equal(health.status, 'ok');
  assert.equal(health.version, packageVersion);
  assert.ok(Number.isInteger(health.uptimeSeconds) && health.uptimeSeconds >= 0);
  assert.deepEqual(replies[0].body.checks, { store: 'ok' });
  // The same client's reads elsewhere are limited: the probes are exempt, not the limits off.
  const reads = await Promise.all(Array.from({ length: 10 }, () => server.api.get('/v1/stats')));
  assert.ok(reads.some((r) => r.status === 429));
}

/** A Redis of the test's own, on a free port, that the test may kill and bring back. */
async function startRedis(port: number, dir: string): Promise<ChildProcess> {
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (c) => {
      out += c;
      if (out.includes('Ready to accept connections')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`redis-server exited with ${code}: ${out}`)));
  });
  child.stdout!.resume();
  return child;
}

async function freePort(): Promise<number> {
  const probe = createServer().listen(0, '127.0.0.1');
  await once(probe, 'listening');
  const { port } = probe.address() as AddressInfo;
  await new Promise((r) => probe.close(r));
  return port;
}

describe('/readyz names what is not ready', () => {
  it('names Redis while it is down (degraded: the node still serves), and is ready again once it is back', async () => {
    const dir = tempDir();
    const port = await freePort();
    let redis = await startRedis(port, dir);
    let server: TestServer | undefined;
    try {
      server = await startTestServer({ redisUrl: `redis://127.0.0.1:${port}/0` });
      const ready = await server.api.get('/readyz');
      assert.equal(ready.status, 200);
      assert.deepEqual(ready.body.checks, { store: 'ok', redis: 'ok' });
      assert.equal(ready.body.status, 'ready');

      await kill9(redis);
      const down = await server.api.get('/readyz');
      assert.equal(down.status, 200, 'a node without Redis still serves');
      assert.equal(down.body.status, 'degraded');
      assert.equal(down.body.checks.store, 'ok');
      assert.notEqual(down.body.checks.redis, 'ok', 'the check says why Redis is not ready');
      assert.equal((await server.api.get('/healthz')).status, 200);

      redis = await startRedis(port, dir);
      await eventually(async () => (await server!.api.get('/readyz')).body.status === 'ready', 10_000, 'ready again');
    } finally {
      await server?.stop();
      await kill9(redis);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
