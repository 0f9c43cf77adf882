import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { runFleetd } from './cli-run.js';
import { type Api, startTestServer, type TestServer } from './helpers.js';
import { dropSchema, TEST_DATABASE_URL, uniqueSchema } from './store/postgres.js';

const code = (res: { body: any }) => res.body?.error?.code;
const inMs = (ms: number) => new Date(Date.now() + ms).toISOString();

/** Waits until `at` (an ISO time) has passed, with a margin for the two clocks being one. */
async function until(at: string): Promise<void> {
  const wait = Date.parse(at) - Date.now() + 50;
  if (wait > 0) await sleep(wait);
}

for (const driver of ['sqlite', 'postgres'] as const) {
  describe(`API keys that expire and rotate (${driver})`, () => {
    let server: TestServer;
    let admin: Api;
    const schema = uniqueSchema('fleetd_keys');

    before(async () => {
      server = await startTestServer(driver === 'postgres' ? { databaseUrl: TEST_DATABASE_URL, databaseSchema: schema } : {});
      admin = server.api;
    });
    after(async () => {
      await server?.stop();
      if (driver !== 'postgres') return;
      await dropSchema(schema);
    });

    it('refuses a key that has expired with 401 FLEETD_ERR_KEY_EXPIRED, naming it and when', async () => {
      const expiresAt = inMs(1_500);
      const made = await admin.post('/v1/keys', { name: 'short-lived', scope: 'read', expiresAt });
      assert.equal(made.status, 201);
      assert.equal(made.body.key.expiresAt, expiresAt);
      const reader = admin.as(made.body.secret);
      assert.equal((await reader.get('/v1/stats')).status, 200);

      await until(expiresAt);
      // Cached from the request above: the cache holds the expiry too.
      const refused = await reader.get('/v1/stats');
      assert.equal(refused.status, 401);
      assert.equal(code(refused), 'FLEETD_ERR_KEY_EXPIRED');
      assert.deepEqual(refused.body.error.details, { keyId: made.body.key.id, expiredAt: expiresAt, rotated: false });
      assert.match(refused.headers.get('www-authenticate')!, /invalid_token/);
      // The list says so too.
      const listed = (await admin.get('/v1/keys')).body.items.find((k: any) => k.id === made.body.key.id);
      assert.equal(listed.expiresAt, expiresAt);
      assert.equal(listed.revokedAt, null);
    });

    it('refuses an expiry in the past or not a time, and creates nothing', async () => {
      const before = (await admin.get('/v1/keys')).body.items.length;
      for (const expiresAt of [inMs(-60_000), 'tomorrow', '2027-13-45T00:00:00Z', 1_900_000_000_000, null]) {
        const res = await admin.post('/v1/keys', { name: 'bad', scope: 'read', expiresAt });
        assert.equal(res.status, 400, JSON.stringify(expiresAt));
        assert.equal(code(res), 'FLEETD_ERR_VALIDATION');
        assert.match(res.body.error.details.field, /expiresAt/);
      }
      assert.equal((await admin.get('/v1/keys')).body.items.length, before);
    });

    it('rotates a key: a new secret at once, the old one until its grace ends, then 401', async () => {
      const made = await admin.post('/v1/keys', { name: 'ci', scope: 'submit' });
      const old = admin.as(made.body.secret);
      assert.equal((await old.get('/v1/stats')).status, 200);

      const rotated = await admin.post(`/v1/keys/${made.body.key.id}/rotate`, { graceMs: 1_500 });
      assert.equal(rotated.status, 200);
      assert.equal(rotated.headers.get('cache-control'), 'no-store');
      assert.equal(rotated.body.key.id, made.body.key.id);
      assert.equal(rotated.body.key.scope, 'submit');
      assert.match(rotated.body.secret, /^fk_/);
      assert.notEqual(rotated.body.secret, made.body.secret);
      assert.ok(rotated.body.key.rotatedAt);
      const graceEnds = rotated.body.key.previousSecretExpiresAt;
      const now = Date.now();
      assert.ok(Date.parse(graceEnds) > now && Date.parse(graceEnds) <= now + 1_500, graceEnds);

      const fresh = admin.as(rotated.body.secret);
      assert.equal((await fresh.post('/v1/tasks', { type: 'rotated' })).status, 201);
      assert.equal((await old.post('/v1/tasks', { type: 'in.grace' })).status, 201);

      await until(graceEnds);
      const refused = await old.get('/v1/stats');
      assert.equal(refused.status, 401);
      assert.equal(code(refused), 'FLEETD_ERR_KEY_EXPIRED');
      assert.equal(refused.body.error.details.rotated, true);
      assert.match(refused.body.error.message, /rotated/);
      assert.equal((await fresh.get('/v1/stats')).status, 200);
    });

    it('gives the previous secret the configured grace by default, one previous secret only, and may move the expiry', async () => {
      const made = await admin.post('/v1/keys', { name: 'deploy', scope: 'read', expiresAt: inMs(3_600_000) });
      const id = made.body.key.id;
      // No body at all: the defaults (FLEETD_KEY_ROTATION_GRACE_MS, 24 h).
      const first = await admin.request('POST', `/v1/keys/${id}/rotate`);
      assert.equal(first.status, 200, JSON.stringify(first.body));
      const grace = Date.parse(first.body.key.previousSecretExpiresAt) - Date.parse(first.body.key.rotatedAt);
      assert.equal(grace, 86_400_000);
      assert.equal(first.body.key.expiresAt, made.body.key.expiresAt);
      assert.equal((await admin.as(made.body.secret).get('/v1/stats')).status, 200);

      // Rotating again replaces the previous secret: the first one stops at once.
      const second = await admin.post(`/v1/keys/${id}/rotate`, { expiresAt: null });
      assert.equal(second.status, 200);
      assert.equal(second.body.key.expiresAt, null);
      const gone = await admin.as(made.body.secret).get('/v1/stats');
      assert.equal(gone.status, 401);
      assert.equal(code(gone), 'FLEETD_ERR_UNAUTHORIZED');
      assert.equal((await admin.as(first.body.secret).get('/v1/stats')).status, 200);
      assert.equal((await admin.as(second.body.secret).get('/v1/stats')).status, 200);
    });

    it('refuses bad rotations with a clear error and changes nothing', async () => {
      const made = await admin.post('/v1/keys', { name: 'victim', scope: 'read', expiresAt: inMs(800) });
      const id = made.body.key.id;
      const reader = admin.as(made.body.secret);
      for (const body of [{ graceMs: -1 }, { graceMs: '60000' }, { graceMs: 2_592_000_001 }, { graceMs: 1.5 }, { expiresAt: 'soon' }, { expiresAt: inMs(-1_000) }, { secret: 'fk_mine' }]) {
        const res = await admin.post(`/v1/keys/${id}/rotate`, body);
        assert.equal(res.status, 400, JSON.stringify(body));
        assert.equal(code(res), 'FLEETD_ERR_VALIDATION');
      }
      assert.equal((await admin.post(`/v1/keys/${id}/rotate`, 'not json')).status, 400);
      const notFound = await admin.post('/v1/keys/key_nope/rotate', {});
      assert.equal(notFound.status, 404);
      assert.equal(code(notFound), 'FLEETD_ERR_NOT_FOUND');
      // Only admins rotate.
      const byReader = await reader.post(`/v1/keys/${id}/rotate`, {});
      assert.equal(byReader.status, 403);
      // Still the same secret, never rotated.
      const listed = (await admin.get('/v1/keys')).body.items.find((k: any) => k.id === id);
      assert.equal(listed.rotatedAt, null);

      // An expired key needs a new expiry to be rotated; with one it works again.
      await until(made.body.key.expiresAt);
      const expired = await admin.post(`/v1/keys/${id}/rotate`, {});
      assert.equal(expired.status, 409);
      assert.equal(code(expired), 'FLEETD_ERR_KEY_STATE');
      const revived = await admin.post(`/v1/keys/${id}/rotate`, { expiresAt: inMs(3_600_000), graceMs: 0 });
      assert.equal(revived.status, 200);
      assert.equal((await admin.as(revived.body.secret).get('/v1/stats')).status, 200);
      const oldSecret = await reader.get('/v1/stats');
      assert.equal(oldSecret.status, 401);

      // A revoked key is not rotated.
      assert.equal((await admin.delete(`/v1/keys/${id}`)).status, 200);
      const revoked = await admin.post(`/v1/keys/${id}/rotate`, {});
      assert.equal(revoked.status, 409);
      assert.equal(code(revoked), 'FLEETD_ERR_KEY_STATE');
      assert.equal((await admin.as(revived.body.secret).get('/v1/stats')).status, 401);
    });
  });
}

describe('`fleetd keys` with expiry and rotation', () => {
  it('creates a key that expires, lists its expiry, rotates it, and refuses a bad time', async () => {
    const server = await startTestServer({ keyRotationGraceMs: 60_000 });
    try {
      const keys = (...args: string[]) => runFleetd(['keys', ...args, '--data-dir', server.dataDir], { env: { ...process.env, FLEETD_KEY_ROTATION_GRACE_MS: '60000' } });
      const expiresAt = '2099-01-01T00:00:00.000Z';
      const made = await keys('create', '--scope', 'read', '--name', 'nightly', '--expires-at', expiresAt);
      assert.equal(made.code, 0, made.stderr);
      const secret = made.stdout.trim();
      assert.equal((await server.api.as(secret).get('/v1/stats')).status, 200);
      const listed = await keys('list');
      assert.match(listed.stdout, new RegExp(`\\tread\\t.*\\texpires ${expiresAt}\\tnightly`));
      const id = /^(key_\w+)\tread/m.exec(listed.stdout)![1];

      const rotated = await keys('rotate', id);
      assert.equal(rotated.code, 0, rotated.stderr);
      const fresh = rotated.stdout.trim();
      assert.match(fresh, /^fk_/);
      assert.match(rotated.stderr, /the previous one works until/);
      assert.equal((await server.api.as(fresh).get('/v1/stats')).status, 200);
      const key = (await server.api.get('/v1/keys')).body.items.find((k: any) => k.id === id);
      assert.equal(Date.parse(key.previousSecretExpiresAt) - Date.parse(key.rotatedAt), 60_000);

      // The operator's acts on the server are audited as "cli", with no address.
      const audited = (await server.api.get(`/v1/audit?target=key:${id}`)).body.items.map((e: any) => [e.action, e.actor, e.address]);
      assert.deepEqual(audited, [['key.rotated', 'cli', null], ['key.created', 'cli', null]]);

      for (const bad of [['create', '--scope', 'read', '--expires-at', 'next week'], ['create', '--scope', 'read', '--expires-at', '2001-01-01T00:00:00Z'], ['rotate', id, '--grace-ms', 'soon']]) {
        const res = await keys(...bad);
        assert.equal(res.code, 2, `${bad.join(' ')}: ${res.stderr}`);
        assert.match(res.stderr, /expires-at|expiresAt|grace-ms/);
      }
    } finally {
      await server.stop();
    }
  });
});
