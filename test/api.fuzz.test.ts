import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import fc from 'fast-check';
import type { PipelineSetup } from '../src/pipelines/pipelines.js';
import { startPipelineServer } from './fake-llm.js';
import { arbitraryFor, BadUtf8, Deep, hostileJson, hostileString, toJsonBytes, type Schema } from './fuzz/hostile.js';
import { sendBytes, sendRaw, type RawReply } from './fuzz/raw-http.js';
import { timerMoved } from './fuzz/timers.js';

/**
 * The API fuzzer. It reads the server's own OpenAPI document and, for every operation, sends
 * requests generated from the operation's schemas and turned hostile: wrong types, missing and
 * unknown fields, malformed JSON, deep and huge bodies, big arrays, unicode edge cases, SQL-looking
 * strings, path traversal and encoded slashes in path parameters, odd content types, huge headers
 * and repeated query keys. Whatever it sends: never a 5xx, every error is the JSON error shape, a
 * rejected request changes nothing, and the server stays healthy.
 *
 * Two namespaces: beside the default namespace's things, team-b has its own (an agent, tasks, a
 * lock), and some requests go with an admin key of team-a. Whatever such a request is and whatever
 * it is answered, nothing of team-b's shows in the answer and nothing of team-b's changes.
 *
 * Seeded and bounded for CI. FLEETD_FUZZ_RUNS (default 20) sets the random requests per operation,
 * FLEETD_FUZZ_SEED (default 8) the seed: `FLEETD_FUZZ_RUNS=2000 node --import tsx --test
 * test/api.fuzz.test.ts` is the long run.
 */
const RUNS = Number(process.env.FLEETD_FUZZ_RUNS ?? 20);
const SEED = Number(process.env.FLEETD_FUZZ_SEED ?? 8);

const setup: PipelineSetup = {
  functions: { words: (ctx) => String((ctx.input as { text?: unknown } | null)?.text ?? '').split(/\s+/).length },
  pipelines: [{ name: 'count', steps: [{ name: 'words', kind: 'code', fn: 'words' }] }],
};

const server = await startPipelineServer(setup, {
  // Nothing may change with time during the run except what the fuzzer's own requests set in motion.
  agentStaleMs: 600_000,
  agentOfflineMs: 1_200_000,
  // A valid long-poll would hold the fuzzer up to the full wait.
  maxClaimWaitMs: 200,
  // The fuzzer sends thousands of wrong credentials from one address; the limit on those has its own test (auth.failures).
  authFailuresPerMinute: 0,
});
// Registered before anything else can throw: a failure of the setup below still stops the server.
after(() => server.stop());
const api = server.api;
const admin = `Bearer ${api.key}`;
const doc = (await api.get('/openapi.json')).body as { paths: Record<string, Record<string, Schema>>; components?: { schemas?: Record<string, Schema> } };
const components = doc.components?.schemas ?? {};

// What the fuzzer can aim at: a few agents, tasks in each state, a lock and a pipeline run.
const agentA = await api.registerAgent(['fuzz']);
await api.registerAgent(['fuzz', 'other']);
for (let i = 0; i < 4; i++) await api.submit({ type: 'fuzz', payload: { i }, priority: i });
await api.claim(agentA.id, 2);
await api.post('/v1/locks', { agentId: agentA.id, resources: ['src/main.ts', 'dir/'], ttlMs: 3_600_000 });
await api.post('/v1/pipelines/count/runs', { input: { text: 'three small words' }, idempotencyKey: 'k1' });
const readKey = (await api.post('/v1/keys', { name: 'fuzz-read', scope: 'read' })).body.secret as string;
/** In every one of team-b's things, so that an answer showing any of them is seen. */
const MARK = 'zz-only-in-team-b';
const agentB = await api.registerAgent(['fuzz'], { name: MARK, namespace: 'team-b' });
for (let i = 0; i < 3; i++) await api.submit({ type: 'fuzz', payload: { MARK, i }, namespace: 'team-b', tags: [MARK] });
await api.as(agentB.token).claim(agentB.id, 1);
await api.post('/v1/locks', { agentId: agentB.id, resources: [`${MARK}/a.ts`], ttlMs: 3_600_000 });
const teamA = `Bearer ${(await api.post('/v1/keys', { name: 'fuzz-team-a', scope: 'admin', namespaces: ['team-a'] })).body.secret as string}`;

interface State {
  takenAt: number;
  counts: unknown;
  tasks: Map<number, any>;
  agents: Map<string, any>;
  locks: Map<string, any>;
  runs: Map<number, unknown>;
  keys: unknown;
}

async function state(): Promise<State> {
  const takenAt = Date.now();
  const [stats, exported, agents, locks, runs, keys] = await Promise.all([
    api.get('/v1/stats'),
    api.get('/v1/tasks/export'),
    api.get('/v1/agents?limit=1000'),
    api.get('/v1/locks?limit=1000'),
    api.get('/v1/pipelines/runs?limit=1000'),
    api.get('/v1/keys'),
  ]);
  const tasks = String(exported.body ?? '').split('\n').filter(Boolean).map((line) => JSON.parse(line));
  const sum = (counts: Record<string, number>) => Object.values(counts).reduce((a, b) => a + b, 0);
  return {
    takenAt,
    // Timers move tasks between states, never in or out of the store.
    counts: { tasks: sum(stats.body.tasks.byStatus), agents: stats.body.agents.byStatus },
    tasks: new Map(tasks.map((t) => [t.id, t])),
    agents: new Map(agents.body.items.map((a: any) => [a.id, a])),
    locks: new Map(locks.body.items.map((l: any) => [l.id, l])),
    // Runs go on in the background; what a request sets is their existence, input and key.
    runs: new Map(runs.body.items.map((r: any) => [r.id, { pipeline: r.pipeline, input: r.input, idempotencyKey: r.idempotencyKey }])),
    keys: keys.body.items,
  };
}

function assertUnchanged(before: State, after: State, what: string): void {
  const now = Date.now();
  assert.deepEqual(after.counts, before.counts, `${what} changed the counts`);
  assert.deepEqual([...after.tasks.keys()], [...before.tasks.keys()], `${what} changed which tasks exist`);
  for (const [id, b] of before.tasks) {
    const a = after.tasks.get(id);
    if (!timerMoved(b, a, now)) assert.deepEqual(a, b, `${what} changed task ${id}`);
  }
  assert.deepEqual(after.agents, before.agents, `${what} changed the agents`);
  for (const [id, b] of before.locks) {
    if (!after.locks.has(id)) assert.ok(Date.parse(b.expiresAt) <= now, `${what} released lock ${id}`);
  }
  for (const id of after.locks.keys()) assert.ok(before.locks.has(id), `${what} took lock ${id}`);
  assert.deepEqual(after.runs, before.runs, `${what} changed the pipeline runs`);
  assert.deepEqual(after.keys, before.keys, `${what} changed the API keys`);
}

/** team-b's things in a state, and nothing else. */
function teamBPart(s: State): State {
  const ofB = <T extends { namespace?: string }>(m: Map<any, T>) => new Map([...m].filter(([, v]) => v.namespace === 'team-b'));
  return { takenAt: s.takenAt, counts: null, tasks: ofB(s.tasks), agents: ofB(s.agents), locks: ofB(s.locks), runs: new Map(), keys: [] };
}

function assertErrorShape(reply: RawReply, what: string): void {
  assert.match(String(reply.headers['content-type']), /^application\/json/, `${what}: error without a JSON content type: ${reply.text.slice(0, 200)}`);
  const body = JSON.parse(reply.text);
  assert.equal(typeof body?.error?.code, 'string', `${what}: error without a code: ${reply.text.slice(0, 300)}`);
  assert.match(body.error.code, /^FLEETD_ERR_[A-Z_]+$/);
  assert.equal(typeof body.error.message, 'string');
  assert.ok(body.error.details !== null && typeof body.error.details === 'object' && !Array.isArray(body.error.details), `${what}: details is not an object`);
}

let current = await state();
/** How often each status came back, reported at the end: a fuzzer that only ever hits 400 tests little. */
const statuses = new Map<number, number>();

/**
 * Sends one request and checks the answer; the state must not change unless it succeeded, and
 * nothing of team-b's may show or change when team-a's key sent it.
 */
async function check(send: () => Promise<RawReply>, what: string, asTeamA = false): Promise<RawReply> {
  const reply = await send();
  statuses.set(reply.status, (statuses.get(reply.status) ?? 0) + 1);
  assert.ok(reply.status < 500, `${what} → ${reply.status}: ${reply.text.slice(0, 500)}`);
  const after = await state();
  if (reply.status >= 300) {
    if (!what.startsWith('HEAD ')) assertErrorShape(reply, what);
    assertUnchanged(current, after, `${what} (answered ${reply.status})`);
  }
  if (asTeamA) {
    assert.ok(!reply.text.includes(MARK), `${what}, sent with team-a's key, shows team-b's: ${reply.text.slice(0, 300)}`);
    assertUnchanged(teamBPart(current), teamBPart(after), `${what}, sent with team-a's key, (answered ${reply.status})`);
  }
  current = after;
  return reply;
}

/** The server still answers its health check and an ordinary submit and read. */
async function assertHealthy(): Promise<void> {
  assert.equal((await api.get('/healthz')).status, 200);
  const task = await api.submit({ type: 'fuzz', payload: { ok: true } });
  assert.equal((await api.get(`/v1/tasks/${task.id}`)).body.id, task.id);
  current = await state();
}

/** Percent-encodes every byte outside the unreserved set, so any string becomes a path segment or query value. */
function encode(value: string): string {
  return [...Buffer.from(value)].map((b) => (/[A-Za-z0-9_.~-]/.test(String.fromCharCode(b)) ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, '0')}`)).join('');
}

const asText = (v: unknown): string => (typeof v === 'string' ? v : v instanceof Deep || v instanceof BadUtf8 ? toJsonBytes(v).toString() : JSON.stringify(v) ?? '');

/** Path segments already encoded: hostile ones written by hand, and encoded values. */
const rawSegments = ['..%2F..%2Fetc%2Fpasswd', '%2F', '%00', '%C0%AE%C0%AE%2F', '%ED%A0%80', '%FF', '%', '%zz', '..', '.', '1%2F2', 'a%20b', '9'.repeat(400), '-1', '0', '1.5', '1e3', '0x10', '99999999999999999999999'];

type Known = { pick: number };
const known = (name: string, pick: number): string => {
  const pools: Record<string, string[]> = {
    agent: [...current.agents.keys()],
    task: [...current.tasks.keys()].map(String),
    lock: [...current.locks.keys()],
    run: [...current.runs.keys()].map(String),
    pipeline: ['count'],
    // Never the admin keys: revoking the fuzzer's own key would end the run.
    key: (current.keys as { id: string; scope: string }[]).filter((k) => k.scope !== 'admin').map((k) => k.id),
  };
  const pool = pools[name] ?? [];
  return pool.length === 0 ? 'none' : encode(pool[pick % pool.length]);
};

/** What kind of thing a path's {id} names, for aiming at existing ones. */
function resourceOf(path: string, param: string): string {
  if (param === 'name') return 'pipeline';
  if (path.startsWith('/v1/agents')) return 'agent';
  if (path.startsWith('/v1/tasks')) return 'task';
  if (path.startsWith('/v1/locks')) return 'lock';
  if (path.startsWith('/v1/keys')) return 'key';
  return 'run';
}

const contentTypes = [
  'text/plain',
  'application/x-www-form-urlencoded',
  'multipart/form-data; boundary=x',
  'application/json; charset=utf-16',
  'application/json; charset=latin1',
  'APPLICATION/JSON',
  'application/json, text/plain',
  'application/vnd.api+json',
  'application/jsonx',
  '*/*',
  'application/octet-stream',
  ';;;',
];

const malformedBodies = [
  '',
  ' ',
  '{',
  '{"a":}',
  '[1,2',
  '{"type":"a",}',
  "{'type':'a'}",
  'null',
  'NaN',
  '\uFEFF{"type":"a"}',
  '{"type":"a"}{"type":"b"}',
  '{"__proto__":{"admin":true},"type":"a"}',
  '{"constructor":{"prototype":{"admin":true}}}',
  '"just a string"',
  '123',
  '1e400',
  'true',
  '[]',
  '{"type":"\\ud800"}',
  '{"type":"\\u0000"}',
  '{"type":"a","priority":1e400}',
  '{"type":"a","priority":123456789012345678901234567890}',
  '['.repeat(100_000),
];

interface Operation {
  method: string;
  path: string;
  spec: Schema;
}

const operations: Operation[] = Object.entries(doc.paths).flatMap(([path, methods]) =>
  Object.entries(methods).map(([method, spec]) => ({ method: method.toUpperCase(), path, spec })),
);

function requestArbitrary(op: Operation) {
  const params = (op.spec.parameters ?? []) as { in: string; name: string; schema: Schema; required?: boolean }[];
  const pathParams = params.filter((p) => p.in === 'path');
  const queryParams = params.filter((p) => p.in === 'query');
  const bodySchema = op.spec.requestBody?.content?.['application/json']?.schema as Schema | undefined;

  const segment = (p: (typeof pathParams)[number]) =>
    fc.oneof(
      { weight: 3, arbitrary: fc.nat().map((pick): Known | string => ({ pick }) as Known) },
      { weight: 2, arbitrary: arbitraryFor(p.schema, components).map((v) => encode(asText(v))) },
      { weight: 1, arbitrary: fc.constantFrom(...rawSegments) },
    );
  const query = fc.array(
    fc.oneof(
      ...(queryParams.length > 0
        ? [fc.tuple(fc.constantFrom(...queryParams.map((p) => p.name)), fc.constantFrom(...queryParams)).chain(([name, p]) => arbitraryFor(p.schema, components).map((v) => `${encode(name)}=${encode(asText(v))}`))]
        : []),
      fc.tuple(hostileString, hostileString).map(([k, v]) => `${encode(k)}=${encode(v)}`),
      fc.constantFrom('&&', '=', 'a[b]=1', '__proto__[admin]=1', 'limit', 'limit=', 'cursor=%FF'),
    ),
    { maxLength: 4 },
  );
  const body = fc.oneof(
    { weight: 4, arbitrary: (bodySchema ? arbitraryFor(bodySchema, components) : hostileJson).map((v) => toJsonBytes(v)) },
    { weight: 1, arbitrary: fc.constantFrom(...malformedBodies).map((t) => Buffer.from(t)) },
    // Cut short somewhere.
    { weight: 1, arbitrary: fc.tuple(bodySchema ? arbitraryFor(bodySchema, components) : hostileJson, fc.nat()).map(([v, at]) => { const b = toJsonBytes(v); return b.subarray(0, at % Math.max(1, b.length)); }) },
    { weight: 1, arbitrary: fc.constant(undefined) },
  );
  const headers = fc.record(
    {
      // Mostly the admin key, so that requests reach validation; else no credential, a wrong one, a
      // reader's, or an agent's own token used elsewhere.
      authorization: fc.oneof(
        { weight: 6, arbitrary: fc.constant(admin) },
        { weight: 2, arbitrary: fc.constant(teamA) },
        { weight: 1, arbitrary: fc.constantFrom(undefined, 'Bearer ', 'Basic YWRtaW46YWRtaW4=', `Bearer ${readKey}`, `Bearer ${agentA.token}`, `bearer ${api.key}`, `Bearer ${api.key}x`, `Bearer ${'k'.repeat(8_000)}`) },
        { weight: 1, arbitrary: hostileString.map((t) => `Bearer ${t}`) },
      ),
      contentType: fc.oneof({ weight: 6, arbitrary: fc.constant('application/json') }, { weight: 2, arbitrary: fc.constantFrom(...contentTypes) }, { weight: 1, arbitrary: fc.constant(undefined) }),
      extra: fc.constantFrom<[string, string][]>(
        [],
        [['x-request-id', 'a'.repeat(300)]],
        [['x-request-id', '../../\u00ff']],
        [['accept-encoding', 'zstd, br;q=2, gzip;q=-1, *;q=0']],
        [['accept', 'text/html, */*;q=0']],
        [['content-encoding', 'gzip']],
        [['x-forwarded-for', "' OR 1=1 --"]],
      ),
    },
    { requiredKeys: ['authorization', 'contentType', 'extra'] },
  );
  return fc.record({ segments: fc.tuple(...pathParams.map(segment)), query, body, headers });
}

type Generated = ReturnType<typeof requestArbitrary> extends fc.Arbitrary<infer T> ? T : never;

function materialise(op: Operation, g: Generated) {
  const params = ((op.spec.parameters ?? []) as { in: string; name: string }[]).filter((p) => p.in === 'path');
  let path = op.path;
  params.forEach((p, i) => {
    const s = g.segments[i];
    path = path.replace(`{${p.name}}`, typeof s === 'string' ? s : known(resourceOf(op.path, p.name), s.pick));
  });
  if (g.query.length > 0) path += `?${g.query.join('&')}`;
  const headers: Record<string, string> = Object.fromEntries(g.headers.extra);
  // node:http sends a header only when it is tab, printable ASCII and latin1; the raw-bytes case covers the rest.
  if (g.headers.authorization !== undefined && /^[\t\u0020-\u007e\u0080-\u00ff]*$/.test(g.headers.authorization)) headers.authorization = g.headers.authorization;
  const sendsBody = g.body !== undefined && op.method !== 'GET';
  if (sendsBody && g.headers.contentType) headers['content-type'] = g.headers.contentType;
  return { method: op.method, path, headers, body: sendsBody ? g.body : undefined };
}

const describeRequest = (r: { method: string; path: string; headers: Record<string, string>; body?: Buffer }) =>
  `${r.method} ${r.path.slice(0, 300)} ${JSON.stringify(r.headers).slice(0, 200)} ${r.body ? r.body.subarray(0, 300).toString() : ''}`;

/** Cases every operation gets, whatever the random runs draw. */
function fixedCases(op: Operation) {
  const path = op.path.replaceAll(/\{[^}]+\}/g, '1');
  const auth = { authorization: admin };
  const json = { ...auth, 'content-type': 'application/json' };
  const cases: { label: string; method: string; path: string; headers: Record<string, string>; body?: Buffer }[] = [
    { label: 'a 10,000-deep body', method: op.method, path, headers: json, body: toJsonBytes(new Deep(10_000)) },
    { label: 'a 2 MB body', method: op.method, path, headers: json, body: Buffer.from(JSON.stringify({ type: 'x'.repeat(2 * 1024 * 1024) })) },
    { label: 'a 100,000-item array', method: op.method, path, headers: json, body: Buffer.from(JSON.stringify(Array(100_000).fill({}))) },
    { label: 'a text/plain body', method: op.method, path, headers: { ...auth, 'content-type': 'text/plain' }, body: Buffer.from('hello') },
    { label: 'a 20 KB header', method: op.method, path, headers: { ...auth, 'x-fuzz': 'h'.repeat(20 * 1024) } },
    { label: '200 headers', method: op.method, path, headers: { ...auth, ...Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`x-fuzz-${i}`, String(i)])) } },
    { label: 'repeated query keys', method: op.method, path: `${path}?limit=1&limit=2&status=queued&status=leased&agentId=a&agentId=b`, headers: auth },
    { label: 'encoded slashes in the path', method: op.method, path: op.path.replaceAll(/\{[^}]+\}/g, '..%2F..%2F1'), headers: auth },
    { label: 'an unknown method', method: 'PATCH', path, headers: auth },
    { label: 'no credential', method: op.method, path, headers: json, body: Buffer.from('{}') },
    { label: 'two credentials', method: op.method, path, headers: { ...json, authorization: [admin, `Bearer ${readKey}`] as unknown as string }, body: Buffer.from('{}') },
  ];
  if (op.path.endsWith('/batch')) cases.push({ label: 'a 65 MB body', method: op.method, path, headers: json, body: Buffer.alloc(65 * 1024 * 1024, 'a') });
  return cases;
}

describe('API fuzzing from the OpenAPI document', () => {
  it('covers every operation the document lists', () => {
    assert.ok(operations.length >= 30, `only ${operations.length} operations in /openapi.json`);
    for (const expected of ['POST /v1/tasks', 'POST /v1/tasks/{id}/complete', 'POST /v1/locks', 'POST /v1/agents/batch', 'DELETE /v1/locks/{id}']) {
      assert.ok(operations.some((o) => `${o.method} ${o.path}` === expected), `${expected} is missing`);
    }
  });

  operations.forEach((op, index) => {
    it(`${op.method} ${op.path}`, async () => {
      for (const c of fixedCases(op)) await check(() => sendRaw(server.url, c), `${c.label}: ${c.method} ${c.path.slice(0, 100)}`);
      // fast-check's own report would print the whole generated value, megabytes of it; the first
      // failure's message names the request in a readable form.
      let failure: Error | undefined;
      try {
        await fc.assert(
          fc.asyncProperty(requestArbitrary(op), async (generated) => {
            const request = materialise(op, generated);
            try {
              await check(() => sendRaw(server.url, request), describeRequest(request), request.headers.authorization === teamA);
            } catch (err) {
              failure ??= err as Error;
              throw err;
            }
          }),
          // Shrinking would resend hundreds of requests; the failure message already names the request.
          { seed: SEED + index, numRuns: RUNS, endOnFailure: true },
        );
      } catch (err) {
        if (failure) failure.message = `seed ${SEED + index}: ${failure.message}`;
        throw failure ?? err;
      }
      await assertHealthy();
    });
  });

  it('answers requests node:http would not send with a JSON error, and stays healthy', async () => {
    const raw = [
      `GET /v1/tasks/\xff\xfe HTTP/1.1\r\nHost: x\r\nAuthorization: ${admin}\r\nConnection: close\r\n\r\n`,
      'GET /v1/tasks HTTP/1.1\r\nHost: x\r\nX-Bad: a\x00b\r\nConnection: close\r\n\r\n',
      'POST /v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n{}\r\n0\r\n\r\n',
      'POST /v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\nContent-Length: 3\r\nConnection: close\r\n\r\n{}',
      `GET http://evil.example/v1/stats HTTP/1.1\r\nHost: x\r\nAuthorization: ${admin}\r\nConnection: close\r\n\r\n`,
      'GET /v1/stats HTTP/9.9\r\nHost: x\r\nConnection: close\r\n\r\n',
    ];
    for (const text of raw) {
      await check(async () => {
        const reply = await sendBytes(server.url, Buffer.from(text, 'latin1'));
        // A request the HTTP parser refuses gets an answer, and that answer is a JSON error.
        assert.ok(reply.status >= 200, `no status line for ${JSON.stringify(text.slice(0, 60))}`);
        return reply;
      }, `raw ${JSON.stringify(text.slice(0, 60))}`);
    }
    await assertHealthy();
  });

  after(() => {
    const seen = [...statuses].sort(([a], [b]) => a - b).map(([status, n]) => `${status}×${n}`).join(' ');
    process.stdout.write(`fuzzer: seed ${SEED}, ${RUNS} random requests per operation; statuses ${seen}\n`);
  });
});
