import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { drivers, startTestServer, stopAndDrop, type TestServer } from './helpers.js';

/** Each bad request must get its status and code, and leave the store exactly as it was, on either store. */
for (const [driver, store] of Object.entries(drivers)) describe(`bad input (${driver})`, () => {
  let server: TestServer;
  let agentId: string;
  let leasedId: number;
  before(async () => {
    server = await startTestServer({ maxPayloadBytes: 10_000, ...store() });
    agentId = (await server.api.registerAgent(['bad'])).id;
    await server.api.submit({ type: 'bad' });
    leasedId = (await server.api.claim(agentId))[0].id;
    await server.api.submit({ type: 'bad', payload: { untouched: true } });
  });
  after(() => stopAndDrop(server));

  const deep = (n: number): unknown => (n === 0 ? 1 : { a: deep(n - 1) });
  type Case = [name: string, method: string, path: () => string, body: unknown, status: number, code: string, headers?: Record<string, string>];
  const cases: Case[] = [
    ['malformed JSON', 'POST', () => '/v1/tasks', '{"type": "x",', 400, 'FLEETD_ERR_MALFORMED_JSON'],
    ['empty JSON body', 'POST', () => '/v1/tasks', '', 400, 'FLEETD_ERR_MALFORMED_JSON'],
    ['missing type', 'POST', () => '/v1/tasks', { payload: {} }, 400, 'FLEETD_ERR_VALIDATION'],
    ['priority as a string', 'POST', () => '/v1/tasks', { type: 'x', priority: '5' }, 400, 'FLEETD_ERR_VALIDATION'],
    ['priority not an integer', 'POST', () => '/v1/tasks', { type: 'x', priority: 1.5 }, 400, 'FLEETD_ERR_VALIDATION'],
    ['negative maxAttempts', 'POST', () => '/v1/tasks', { type: 'x', maxAttempts: -1 }, 400, 'FLEETD_ERR_VALIDATION'],
    ['unknown field', 'POST', () => '/v1/tasks', { type: 'x', colour: 'red' }, 400, 'FLEETD_ERR_VALIDATION'],
    ['huge type string', 'POST', () => '/v1/tasks', { type: 'x'.repeat(5_000) }, 400, 'FLEETD_ERR_VALIDATION'],
    ['type with spaces and quotes', 'POST', () => '/v1/tasks', { type: "x'; DROP TABLE tasks;--" }, 400, 'FLEETD_ERR_VALIDATION'],
    ['runAt not a date', 'POST', () => '/v1/tasks', { type: 'x', runAt: 'tomorrow' }, 400, 'FLEETD_ERR_VALIDATION'],
    ['runAt and delayMs together', 'POST', () => '/v1/tasks', { type: 'x', runAt: new Date().toISOString(), delayMs: 5 }, 400, 'FLEETD_ERR_VALIDATION'],
    ['payload over the limit', 'POST', () => '/v1/tasks', { type: 'x', payload: 'y'.repeat(20_000) }, 413, 'FLEETD_ERR_PAYLOAD_TOO_LARGE'],
    ['body over the limit', 'POST', () => '/v1/tasks', { type: 'x', payload: 'y'.repeat(200_000) }, 413, 'FLEETD_ERR_BODY_TOO_LARGE'],
    ['payload nested too deep', 'POST', () => '/v1/tasks', { type: 'x', payload: deep(100) }, 400, 'FLEETD_ERR_VALIDATION'],
    ['text/plain body', 'POST', () => '/v1/tasks', 'type=x', 415, 'FLEETD_ERR_UNSUPPORTED_MEDIA_TYPE', { 'content-type': 'text/plain' }],
    ['form body', 'POST', () => '/v1/tasks', 'type=x', 415, 'FLEETD_ERR_UNSUPPORTED_MEDIA_TYPE', { 'content-type': 'application/x-www-form-urlencoded' }],
    ['batch with one bad item', 'POST', () => '/v1/tasks/batch', { tasks: [{ type: 'ok' }, { type: 'ok', priority: 'high' }] }, 400, 'FLEETD_ERR_VALIDATION'],
    ['batch with one oversized payload', 'POST', () => '/v1/tasks/batch', { tasks: [{ type: 'ok' }, { type: 'ok', payload: 'z'.repeat(20_000) }] }, 413, 'FLEETD_ERR_PAYLOAD_TOO_LARGE'],
    ['empty batch', 'POST', () => '/v1/tasks/batch', { tasks: [] }, 400, 'FLEETD_ERR_VALIDATION'],
    ['batch with duplicate keys but different tasks', 'POST', () => '/v1/tasks/batch', { tasks: [{ type: 'ok', idempotencyKey: 'd' }, { type: 'ok2', idempotencyKey: 'd' }] }, 409, 'FLEETD_ERR_IDEMPOTENCY_CONFLICT'],
    ['claim for an unknown agent', 'POST', () => '/v1/tasks/claim', { agentId: 'ghost' }, 404, 'FLEETD_ERR_NOT_FOUND'],
    ['claim max 0', 'POST', () => '/v1/tasks/claim', { agentId: 'x', max: 0 }, 400, 'FLEETD_ERR_VALIDATION'],
    ['claim wait beyond the limit', 'POST', () => '/v1/tasks/claim', { agentId: 'x', waitMs: 3_600_000 }, 400, 'FLEETD_ERR_VALIDATION'],
    ['complete by another agent', 'POST', () => `/v1/tasks/${leasedId}/complete`, { agentId: 'someone-else' }, 409, 'FLEETD_ERR_LEASE_LOST'],
    ['complete an unknown task', 'POST', () => '/v1/tasks/999999/complete', () => ({ agentId }), 404, 'FLEETD_ERR_NOT_FOUND'],
    ['task id not a number', 'GET', () => '/v1/tasks/abc', undefined, 400, 'FLEETD_ERR_VALIDATION'],
    ['negative task id', 'GET', () => '/v1/tasks/-4', undefined, 400, 'FLEETD_ERR_VALIDATION'],
    // Past 2^53 − 1 an id was rounded to another id, and past 2^63 PostgreSQL's bigint refused it with a 500.
    ['task id past 2^53', 'GET', () => '/v1/tasks/9007199254740993', undefined, 400, 'FLEETD_ERR_VALIDATION'],
    ['complete a task id past 2^64', 'POST', () => '/v1/tasks/99999999999999999999/complete', () => ({ agentId }), 400, 'FLEETD_ERR_VALIDATION'],
    ['batch item id past 2^53', 'POST', () => '/v1/tasks/complete', () => ({ agentId, items: [{ op: 'complete', id: 2 ** 64 }] }), 400, 'FLEETD_ERR_VALIDATION'],
    ['parent id past 2^53', 'POST', () => '/v1/tasks', { type: 'x', parentId: 2 ** 64 }, 400, 'FLEETD_ERR_VALIDATION'],
    ['log sequence past 2^53', 'GET', () => `/v1/tasks/${leasedId}/logs?since=99999999999999999999`, undefined, 400, 'FLEETD_ERR_VALIDATION'],
    ['run id past 2^53', 'GET', () => '/v1/pipelines/runs/99999999999999999999', undefined, 400, 'FLEETD_ERR_VALIDATION'],
    ['pipeline version past 32 bits', 'GET', () => '/v1/pipelines/x/versions/2147483648', undefined, 400, 'FLEETD_ERR_VALIDATION'],
    ['bad cursor', 'GET', () => '/v1/tasks?cursor=%%%%', undefined, 400, 'FLEETD_ERR_VALIDATION'],
    ['unknown status filter', 'GET', () => '/v1/tasks?status=exploded', undefined, 400, 'FLEETD_ERR_VALIDATION'],
    ['limit too large', 'GET', () => '/v1/tasks?limit=100000', undefined, 400, 'FLEETD_ERR_VALIDATION'],
    ['agent with bad capability name', 'POST', () => '/v1/agents', { name: 'a', capabilities: ['../etc/passwd'] }, 400, 'FLEETD_ERR_VALIDATION'],
    ['agent with too many capabilities', 'POST', () => '/v1/agents', { name: 'a', capabilities: Array.from({ length: 100 }, (_, i) => `c${i}`) }, 400, 'FLEETD_ERR_VALIDATION'],
    ['agent maxConcurrency 0', 'POST', () => '/v1/agents', { name: 'a', maxConcurrency: 0 }, 400, 'FLEETD_ERR_VALIDATION'],
    ['agent labels not strings', 'POST', () => '/v1/agents', { name: 'a', labels: { zone: 1 } }, 400, 'FLEETD_ERR_VALIDATION'],
    ['lock with no resources', 'POST', () => '/v1/locks', () => ({ agentId, resources: [], ttlMs: 1000 }), 400, 'FLEETD_ERR_VALIDATION'],
    ['lock ttl over the limit', 'POST', () => '/v1/locks', () => ({ agentId, resources: ['r'], ttlMs: 10 ** 12 }), 400, 'FLEETD_ERR_VALIDATION'],
    ['heartbeat for an unknown agent', 'POST', () => '/v1/agents/ghost/heartbeat', undefined, 404, 'FLEETD_ERR_NOT_FOUND'],
    ['unknown route', 'GET', () => '/v1/nothing-here', undefined, 404, 'FLEETD_ERR_NOT_FOUND'],
    ['prototype poisoning', 'POST', () => '/v1/tasks', '{"type":"x","__proto__":{"admin":true}}', 400, 'FLEETD_ERR_MALFORMED_JSON'],
  ];

  for (const [name, method, path, body, status, code, headers] of cases) {
    it(`${name}: ${status} ${code}, nothing changed`, async () => {
      const { api } = server;
      const before = (await api.get('/v1/stats')).body.tasks;
      const agentsBefore = (await api.get('/v1/agents?limit=1000')).body.items.length;
      const locksBefore = (await api.get('/v1/locks')).body.items.length;
      const res = await api.request(method, path(), typeof body === 'function' ? body() : body, headers);
      assert.equal(res.status, status, JSON.stringify(res.body));
      assert.equal(res.body.error.code, code);
      assert.equal(typeof res.body.error.message, 'string');
      assert.equal(typeof res.body.error.details, 'object');
      assert.deepEqual((await api.get('/v1/stats')).body.tasks, before);
      assert.equal((await api.get('/v1/agents?limit=1000')).body.items.length, agentsBefore);
      assert.equal((await api.get('/v1/locks')).body.items.length, locksBefore);
      assert.equal((await api.get(`/v1/tasks/${leasedId}`)).body.status, 'leased');
    });
  }

  it('names the field that is wrong', async () => {
    const res = await server.api.post('/v1/tasks/batch', { tasks: [{ type: 'ok' }, { type: 'ok', leaseMs: 5 }] });
    assert.equal(res.body.error.details.field, 'body.tasks.1.leaseMs');
  });

  it('survives all of it: the process still serves', async () => {
    assert.equal((await server.api.get('/healthz')).status, 200);
  });
});
