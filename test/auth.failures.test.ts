import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { after, describe, it } from 'node:test';
import pg from 'pg';
import pino from 'pino';
import { TEST_REDIS_URL } from './cluster/node-process.js';
import { newAdminKey, startTestServer, type TestServer } from './helpers.js';
import { TEST_DATABASE_URL, uniqueSchema } from './store/postgres.js';
import { connect } from './ws-helpers.js';

const code = (res: { body: any }) => res.body?.error?.code;
const wrongKey = () => `fk_${randomBytes(32).toString('base64url')}`;

/** A logger whose lines a test reads. */
function capturedLog(): { logger: pino.Logger; lines: Record<string, any>[] } {
  const lines: Record<string, any>[] = [];
  const sink = new Writable({
    write(chunk, _enc, done) {
      for (const line of String(chunk).split('\n')) if (line) lines.push(JSON.parse(line));
      done();
    },
  });
  return { logger: pino({ level: 'warn' }, sink), lines };
}

describe('failed authentication, limited per address', () => {
  const servers: TestServer[] = [];
  const schemas: string[] = [];
  after(async () => {
    for (const server of servers) await server.stop();
    if (schemas.length === 0) return;
    const client = new pg.Client({ connectionString: TEST_DATABASE_URL });
    await client.connect();
    for (const schema of schemas) await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await client.end();
  });

  it('answers 20 wrong keys in a minute with 401, the 21st with 429 and Retry-After, refuses the right key too, and logs the burst once', async () => {
    const { logger, lines } = capturedLog();
    const server = await startTestServer({}, { logger });
    servers.push(server);
    const anonymous = server.api.as(undefined);

    // No credential at all is no guess: never counted.
    for (let i = 0; i < 25; i++) assert.equal((await anonymous.get('/v1/tasks')).status, 401);
    assert.equal((await server.api.get('/v1/tasks')).status, 200);

    for (let i = 1; i <= 20; i++) {
      // Malformed headers, unknown keys and unknown agent tokens all count.
      const res = i === 1
        ? await anonymous.request('GET', '/v1/tasks', undefined, { authorization: 'Basic dXNlcjpwYXNz' })
        : await anonymous.as(i % 2 === 0 ? wrongKey() : `fla_${randomBytes(24).toString('base64url')}`).get('/v1/stats');
      assert.equal(res.status, 401, `failure ${i}`);
      assert.equal(code(res), 'FLEETD_ERR_UNAUTHORIZED');
    }
    const refused = await anonymous.as(wrongKey()).post('/v1/tasks', { type: 'guess' });
    assert.equal(refused.status, 429);
    assert.equal(code(refused), 'FLEETD_ERR_AUTH_RATE_LIMITED');
    assert.equal(refused.body.error.details.limit, 20);
    const retryAfter = Number(refused.headers.get('retry-after'));
    assert.ok(retryAfter >= 1 && retryAfter <= 60, `Retry-After ${retryAfter}`);
    assert.equal(refused.body.error.details.retryAfterSeconds, retryAfter);

    // A guess that is right must look like one that is wrong; and a refused request writes nothing.
    const right = await server.api.get('/v1/stats');
    assert.equal(right.status, 429);
    assert.equal(code(right), 'FLEETD_ERR_AUTH_RATE_LIMITED');
    assert.equal((await server.api.post('/v1/tasks', { type: 'refused' })).status, 429);
    // Public routes still answer.
    assert.equal((await anonymous.get('/healthz')).status, 200);
    // A WebSocket's credential in its query is refused the same way, before the upgrade.
    const ws = await connect(`${server.url}/v1/events?token=${server.adminKey}`).then(
      async (peer) => {
        await peer.close();
        return { status: 101, body: undefined };
      },
      (err: { status: number; body: any }) => err,
    );
    assert.equal(ws.status, 429);
    assert.equal(code(ws), 'FLEETD_ERR_AUTH_RATE_LIMITED');

    const bursts = lines.filter((l) => /failed authentications from/.test(l.msg));
    assert.equal(bursts.length, 1, JSON.stringify(bursts));
    assert.equal(bursts[0].failures, 20);
    assert.equal(bursts[0].address, '127.0.0.1');
    assert.equal(bursts[0].level, 40);
    // The tasks refused were never written.
    assert.equal((await server.store.taskList({ limit: 10 })).items.length, 0);
  });

  it('takes the number from FLEETD_AUTH_FAILURES_PER_MINUTE, and 0 turns the limit off', async () => {
    const three = await startTestServer({}, { env: { FLEETD_AUTH_FAILURES_PER_MINUTE: '3' } });
    servers.push(three);
    for (let i = 0; i < 3; i++) assert.equal((await three.api.as(wrongKey()).get('/v1/tasks')).status, 401);
    assert.equal((await three.api.as(wrongKey()).get('/v1/tasks')).status, 429);

    const off = await startTestServer({ authFailuresPerMinute: 0 });
    servers.push(off);
    for (let i = 0; i < 30; i++) assert.equal((await off.api.as(wrongKey()).get('/v1/tasks')).status, 401);
    assert.equal((await off.api.get('/v1/tasks')).status, 200);
  });

  it('counts failures across nodes through Redis', async () => {
    const shared = {
      databaseUrl: TEST_DATABASE_URL,
      databaseSchema: uniqueSchema('fleetd_authfail'),
      redisUrl: TEST_REDIS_URL,
      redisPrefix: `fleetd-test-${randomBytes(4).toString('hex')}:`,
      adminKey: newAdminKey(),
      authFailuresPerMinute: 10,
    };
    schemas.push(shared.databaseSchema);
    const a = await startTestServer(shared);
    servers.push(a);
    const b = await startTestServer(shared);
    servers.push(b);
    for (let i = 0; i < 5; i++) {
      assert.equal((await a.api.as(wrongKey()).get('/v1/tasks')).status, 401);
      assert.equal((await b.api.as(wrongKey()).get('/v1/tasks')).status, 401);
    }
    assert.equal((await a.api.get('/v1/tasks')).status, 429);
    assert.equal((await b.api.get('/v1/tasks')).status, 429);
  });
});
