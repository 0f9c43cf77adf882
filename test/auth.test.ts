import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { Api, eventually, fleetdBin, kill9, listeningUrl, startFleetdProcess, startTestServer, tempDir, type TestServer } from './helpers.js';
import { connect, connectAgent, type Peer } from './ws-helpers.js';

const code = (res: { body: any }) => res.body?.error?.code;

describe('API keys and scopes', () => {
  let server: TestServer;
  let admin: Api;
  let submitter: Api;
  let reader: Api;
  let anonymous: Api;

  async function newKey(scope: string): Promise<string> {
    const res = await admin.post('/v1/keys', { name: `${scope} key`, scope });
    assert.equal(res.status, 201);
    assert.equal(res.body.key.scope, scope);
    return res.body.secret;
  }

  before(async () => {
    server = await startTestServer({ maxConnectionsPerKey: 2 });
    admin = server.api;
    submitter = admin.as(await newKey('submit'));
    reader = admin.as(await newKey('read'));
    anonymous = admin.as(undefined);
  });
  after(() => server.stop());

  it('answers a request with no credential, a malformed header or an unknown key with 401 and WWW-Authenticate', async () => {
    for (const res of [
      await anonymous.get('/v1/tasks'),
      await anonymous.post('/v1/tasks', { type: 'x' }),
      await anonymous.request('GET', '/v1/tasks', undefined, { authorization: 'Basic dXNlcjpwYXNz' }),
      await anonymous.as('fk_not-a-key-that-exists-anywhere-0000000000').get('/v1/tasks'),
      await anonymous.as('fla_not-a-token').post('/v1/tasks/claim', { agentId: 'x' }),
    ]) {
      assert.equal(res.status, 401);
      assert.equal(code(res), 'FLEETD_ERR_UNAUTHORIZED');
      assert.match(res.headers.get('www-authenticate')!, /^Bearer/);
    }
    // Health, readiness, the API document and the dashboard's page need nothing.
    for (const path of ['/healthz', '/readyz', '/openapi.json']) assert.equal((await anonymous.get(path)).status, 200, path);
  });

  it('lets a read key read and nothing more: 403 on writes, and a refused write changes nothing', async () => {
    const before = (await admin.get('/v1/stats')).body;
    assert.equal((await reader.get('/v1/tasks')).status, 200);
    assert.equal((await reader.get('/v1/stats')).status, 200);
    assert.equal((await reader.get('/metrics')).status, 200);
    const submit = await reader.post('/v1/tasks', { type: 'nope' });
    assert.equal(submit.status, 403);
    assert.equal(code(submit), 'FLEETD_ERR_FORBIDDEN');
    assert.deepEqual(submit.body.error.details, { needs: 'submit', scope: 'read', keyId: submit.body.error.details.keyId });
    assert.equal((await reader.post('/v1/agents', { name: 'sneaky' })).status, 403);
    assert.equal((await reader.get('/v1/config')).status, 403);
    assert.equal((await anonymous.get('/metrics')).status, 401);
    const afterwards = (await admin.get('/v1/stats')).body;
    assert.deepEqual(afterwards.tasks, before.tasks);
    assert.deepEqual(afterwards.agents, before.agents);
  });

  it('lets a submit key submit, cancel and register agents, but not act for an agent nor administer', async () => {
    const task = await submitter.submit({ type: 'sub' });
    const agent = await submitter.registerAgent(['sub']);
    const claim = await submitter.post('/v1/tasks/claim', { agentId: agent.id });
    assert.equal(claim.status, 403);
    assert.match(claim.body.error.message, /agent's own token or an admin key/);
    const [leased] = await admin.as(agent.token).claim(agent.id);
    assert.equal(leased.id, task.id);
    const complete = await submitter.post(`/v1/tasks/${task.id}/complete`, { agentId: agent.id, result: 'forged' });
    assert.equal(complete.status, 403);
    assert.equal((await admin.get(`/v1/tasks/${task.id}`)).body.status, 'leased');
    assert.equal((await submitter.get('/v1/config')).status, 403);
    assert.equal((await submitter.get('/v1/keys')).status, 403);
    assert.equal((await submitter.post('/v1/keys', { name: 'escalate', scope: 'admin' })).status, 403);
    assert.equal((await submitter.delete(`/v1/agents/${agent.id}`)).status, 403);
    const other = await submitter.submit({ type: 'sub-cancel' });
    assert.equal((await submitter.delete(`/v1/tasks/${other.id}`)).body.status, 'cancelled');
  });

  it('gives admins the configuration with every secret masked', async () => {
    const config = await admin.get('/v1/config');
    assert.equal(config.status, 200);
    assert.equal(config.body.adminKey, '***');
    assert.ok(!JSON.stringify(config.body).includes(server.adminKey!));
  });

  it('creates keys whose secret is shown once, lists them without secrets, and revokes them at once', async () => {
    const created = await admin.post('/v1/keys', { name: 'ci', scope: 'read' });
    const { secret, key } = created.body;
    assert.match(secret, /^fk_[A-Za-z0-9_-]{43}$/);
    const listed = (await admin.get('/v1/keys')).body.items;
    const mine = listed.find((k: any) => k.id === key.id);
    assert.deepEqual(Object.keys(mine).sort(), ['createdAt', 'expiresAt', 'id', 'name', 'namespaces', 'previousSecretExpiresAt', 'revokedAt', 'rotatedAt', 'scope']);
    assert.ok(!JSON.stringify(listed).includes(secret));
    assert.equal((await admin.as(secret).get('/v1/tasks')).status, 200);
    const revoked = await admin.delete(`/v1/keys/${key.id}`);
    assert.equal(revoked.status, 200);
    assert.ok(revoked.body.revokedAt);
    assert.equal((await admin.as(secret).get('/v1/tasks')).status, 401);
    assert.equal((await admin.delete('/v1/keys/key_nope')).status, 404);
  });

  it('refuses bad key requests with 400, and revoking the last admin key with 409', async () => {
    for (const body of [{ name: 'x', scope: 'root' }, { scope: 'read' }, { name: '', scope: 'read' }, { name: 'x', scope: 'read', secret: 'mine' }]) {
      const res = await admin.post('/v1/keys', body);
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.equal(code(res), 'FLEETD_ERR_VALIDATION');
    }
    const keys = (await admin.get('/v1/keys')).body.items;
    const liveAdmins = keys.filter((k: any) => k.scope === 'admin' && k.revokedAt === null);
    assert.equal(liveAdmins.length, 1);
    const last = await admin.delete(`/v1/keys/${liveAdmins[0].id}`);
    assert.equal(last.status, 409);
    assert.equal(code(last), 'FLEETD_ERR_KEY_STATE');
    assert.equal((await admin.get('/v1/keys')).status, 200);
  });

  it('lets an agent act only for itself: its leases, its locks, its heartbeat', async () => {
    const a = await submitter.registerAgent(['own']);
    const b = await submitter.registerAgent(['own']);
    const asA = admin.as(a.token);
    const asB = admin.as(b.token);
    const task = await submitter.submit({ type: 'own' });
    assert.equal((await asB.post('/v1/tasks/claim', { agentId: a.id })).status, 403);
    const [leased] = await asA.claim(a.id);
    assert.equal(leased.id, task.id);
    // B can neither complete, fail nor extend A's lease, even naming A.
    for (const action of ['complete', 'fail', 'extend']) {
      const res = await asB.post(`/v1/tasks/${task.id}/${action}`, { agentId: a.id });
      assert.equal(res.status, 403, action);
      assert.equal(code(res), 'FLEETD_ERR_FORBIDDEN');
    }
    // Naming itself, B is refused by the lease (409), not by auth.
    assert.equal((await asB.post(`/v1/tasks/${task.id}/complete`, { agentId: b.id })).status, 409);
    assert.equal((await asB.post(`/v1/agents/${a.id}/heartbeat`)).status, 403);
    assert.equal((await asA.post(`/v1/agents/${a.id}/heartbeat`)).status, 200);
    // An agent token is for the agent's own routes: not for reading the fleet or submitting.
    assert.equal((await asA.get('/v1/tasks')).status, 403);
    assert.equal((await asA.post('/v1/tasks', { type: 'own' })).status, 403);

    const lock = await asA.post('/v1/locks', { agentId: a.id, resources: ['repo/a.txt'], ttlMs: 60_000 });
    assert.equal(lock.status, 200);
    assert.equal((await asB.post('/v1/locks', { agentId: a.id, resources: ['repo/b.txt'], ttlMs: 60_000 })).status, 403);
    assert.equal((await asB.delete(`/v1/locks/${lock.body.id}?agentId=${a.id}`)).status, 403);
    // Without naming anyone, B releases as itself, and A's lock is not B's to release.
    assert.equal((await asB.delete(`/v1/locks/${lock.body.id}`)).status, 403);
    assert.equal((await admin.get(`/v1/locks/${lock.body.id}`)).status, 200);

    const done = await asA.post(`/v1/tasks/${task.id}/complete`, { agentId: a.id, result: 'ok' });
    assert.equal(done.status, 200);
    assert.equal(done.body.status, 'completed');
    assert.equal((await asA.delete(`/v1/locks/${lock.body.id}`)).status, 200);
  });

  it('authenticates WebSockets before the upgrade: header or ?token=, 401 / 403, and a cap per credential', async () => {
    const refused = (p: Promise<unknown>) => p.then(() => assert.fail('the upgrade was accepted'), (err) => err as { status: number; body: any });
    const noKey = await refused(connect(`${server.url}/v1/events`));
    assert.equal(noKey.status, 401);
    assert.equal(noKey.body.error.code, 'FLEETD_ERR_UNAUTHORIZED');

    const a = await submitter.registerAgent(['ws']);
    const b = await submitter.registerAgent(['ws']);
    const foreign = await refused(connect(`${server.url}/v1/agents/${a.id}/stream`, { authorization: `Bearer ${b.token}` }));
    assert.equal(foreign.status, 403);
    const reading = await refused(connect(`${server.url}/v1/agents/${a.id}/stream?token=${reader.key}`));
    assert.equal(reading.status, 403);
    const { peer, welcome } = await connectAgent(server.url, a);
    assert.equal(welcome.agent.id, a.id);
    await peer.close();

    // A browser's observer: the key in the query. This key may hold two sockets at once. Every
    // socket is closed whatever fails: one left open would hold a place of the key's for the tests after.
    const open: Peer[] = [];
    const opened = async (connecting: Promise<Peer>) => {
      const peer = await connecting;
      open.push(peer);
      return peer;
    };
    try {
      const first = await opened(connect(`${server.url}/v1/events?token=${reader.key}`));
      await opened(connect(`${server.url}/v1/events`, { authorization: `Bearer ${reader.key}` }));
      const third = await refused(opened(connect(`${server.url}/v1/events?token=${reader.key}`)));
      assert.equal(third.status, 429);
      assert.equal(third.body.error.code, 'FLEETD_ERR_TOO_MANY_CONNECTIONS');
      // Another credential is not affected, and closing one frees a place.
      await opened(connect(`${server.url}/v1/events?token=${submitter.key}`));
      await first.close();
      await opened(connect(`${server.url}/v1/events?token=${reader.key}`));
    } finally {
      for (const peer of open) await peer.close();
    }
  });

  it('documents 401 and 403 for every protected route in the API document', async () => {
    const doc = (await anonymous.get('/openapi.json')).body;
    const claim = doc.paths['/v1/tasks/claim'].post.responses;
    assert.ok(claim['401'] && claim['403']);
    assert.equal(doc.paths['/healthz'].get.responses?.['401'], undefined);
  });
});

describe('first start, --no-auth and the keys command (real processes)', () => {
  it('makes an admin key on first start, prints it once (never in the logs), and not again on restart', async () => {
    const dataDir = tempDir();
    const env: NodeJS.ProcessEnv = { ...process.env, FLEETD_LOG_LEVEL: 'info' };
    delete env.FLEETD_ADMIN_KEY;
    const started: ChildProcess[] = [];
    const start = () => {
      const child = spawn(process.execPath, [fleetdBin, 'start', '--port', '0', '--host', '127.0.0.1', '--data-dir', dataDir], {
        env,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      started.push(child);
      let stderr = '';
      let stdout = '';
      child.stderr!.on('data', (c) => (stderr += c));
      child.stdout!.on('data', (c) => (stdout += c));
      return { child, output: () => ({ stderr, stdout }) };
    };
    try {
      const first = start();
      const url = await listeningUrl(first.child);
      // stderr is another pipe: the banner, written before the "listening" log line, may still be on its way.
      const keyLine = /^\s+(fk_[A-Za-z0-9_-]+)$/m;
      await eventually(() => keyLine.test(first.output().stderr), 10_000, 'the first admin key on stderr');
      const printed = keyLine.exec(first.output().stderr)![1];
      assert.equal((await new Api(url, printed).get('/v1/config')).status, 200);
      assert.equal((await new Api(url).get('/v1/tasks')).status, 401);
      assert.ok(!first.output().stdout.includes(printed), 'the key is in the log');
      await kill9(first.child);

      const second = start();
      const again = await listeningUrl(second.child);
      assert.ok(!/fk_/.test(second.output().stderr), 'a second start printed a key');
      assert.equal((await new Api(again, printed).get('/v1/config')).status, 200);
    } finally {
      for (const child of started) await kill9(child);
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it('runs without auth only when told to, and says so loudly', async () => {
    const dataDir = tempDir();
    const child = spawn(process.execPath, [fleetdBin, 'start', '--no-auth', '--port', '0', '--host', '127.0.0.1', '--data-dir', dataDir], {
      env: { ...process.env, FLEETD_LOG_LEVEL: 'info' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let stdout = '';
    child.stdout!.on('data', (c) => (stdout += c));
    try {
      const url = await listeningUrl(child);
      const open = new Api(url);
      assert.equal((await open.post('/v1/tasks', { type: 'open' })).status, 201);
      assert.match(stdout, /AUTH IS OFF/);
    } finally {
      await kill9(child);
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it('makes, lists and revokes keys with `fleetd keys` beside a running server', async () => {
    const dataDir = tempDir();
    const { child, api } = await startFleetdProcess(dataDir);
    const keys = (...args: string[]) =>
      new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
        const p = spawn(process.execPath, [fleetdBin, 'keys', ...args, '--data-dir', dataDir], { stdio: ['ignore', 'pipe', 'pipe'] });
        let stdout = '';
        let stderr = '';
        p.stdout.on('data', (c) => (stdout += c));
        p.stderr.on('data', (c) => (stderr += c));
        p.on('close', (code) => resolve({ code, stdout, stderr }));
      });
    try {
      const made = await keys('create', '--scope', 'submit', '--name', 'deploy bot');
      assert.equal(made.code, 0, made.stderr);
      const secret = made.stdout.trim();
      assert.match(secret, /^fk_/);
      const bot = api.as(secret);
      assert.equal((await bot.post('/v1/tasks', { type: 'cli' })).status, 201);
      assert.equal((await bot.get('/v1/config')).status, 403);

      const listed = await keys('list');
      assert.match(listed.stdout, /\tsubmit\t.*\tlive\tdeploy bot/);
      assert.ok(!listed.stdout.includes(secret));
      const id = /^(key_\w+)\tsubmit/m.exec(listed.stdout)![1];
      assert.equal((await keys('revoke', id)).code, 0);
      // Through the CLI the server learns of it when its cache entry ends; through the API at once.
      const viaApi = (await api.get('/v1/keys')).body.items.find((k: any) => k.id === id);
      assert.ok(viaApi.revokedAt);

      const bad = await keys('create', '--scope', 'root');
      assert.equal(bad.code, 2);
      assert.match(bad.stderr, /--scope/);
      const missing = await keys('revoke', 'key_nope');
      assert.equal(missing.code, 2);
      assert.match(missing.stderr, /key_nope does not exist/);
    } finally {
      await kill9(child);
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
