import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import pino from 'pino';
import { drivers, eventually, withServer, type Api } from './helpers.js';
import { once } from 'node:events';
import { WebSocketServer } from 'ws';
import { Connections } from '../src/server/gateway/connections.js';
import { EventStream } from '../src/server/gateway/event-stream.js';
import { connect, type Peer } from './ws-helpers.js';

/**
 * Locks and schedules per namespace, over real HTTP. An agent locks in its own namespace only; the
 * admin key reaches every namespace and names the one it acts in; an agent's token acts in its
 * agent's namespace, and is what finds another namespace's locks missing.
 */
const lockIds = async (api: Api, query = '') => ((await api.get(`/v1/locks?limit=100${query}`)).body.items as { id: string }[]).map((l) => l.id).sort();

for (const [driver, store] of Object.entries(drivers)) {
  describe(`locks and schedules per namespace (${driver})`, { timeout: 60_000 }, () => {
    it('holds the same resource in two namespaces at once; conflicts and directories stay within one; another namespace answers 404', async () => {
      await withServer(store(), async (server) => {
        const { api } = server;
        const alice = await api.registerAgent(['dev']);
        const bob = await api.registerAgent(['dev']);
        const aliceA = await api.registerAgent(['dev'], { namespace: 'team-a' });
        const bobA = await api.registerAgent(['dev'], { namespace: 'team-a' });
        const bobB = await api.registerAgent(['dev'], { namespace: 'team-b' });
        const asAlice = api.as(alice.token);

        const inA = await api.post('/v1/locks', { agentId: aliceA.id, resources: ['src/a.ts'], ttlMs: 60_000, namespace: 'team-a' });
        const inB = await api.post('/v1/locks', { agentId: bobB.id, resources: ['src/a.ts'], ttlMs: 60_000 });
        assert.equal(inA.status, 200, JSON.stringify(inA.body));
        assert.equal(inB.status, 200, JSON.stringify(inB.body));
        assert.deepEqual([inA.body.namespace, inB.body.namespace], ['team-a', 'team-b']);
        // An agent's token locks in its agent's namespace without naming it.
        const inDefault = await asAlice.post('/v1/locks', { agentId: alice.id, resources: ['src/a.ts'], ttlMs: 60_000 });
        assert.equal(inDefault.status, 200, JSON.stringify(inDefault.body));
        assert.equal(inDefault.body.namespace, 'default');

        const clash = await api.post('/v1/locks', { agentId: bobA.id, resources: ['src/a.ts'], ttlMs: 60_000 });
        assert.equal(clash.status, 409);
        assert.deepEqual(
          clash.body.error.details.conflicts.map((c: any) => [c.lockId, c.agentId]),
          [[inA.body.id, aliceA.id]],
          "within team-a it clashes with team-a's holder only",
        );
        const dir = await api.post('/v1/locks', { agentId: aliceA.id, resources: ['lib/'], ttlMs: 60_000, namespace: 'team-a' });
        assert.equal(dir.status, 200);
        const underInB = await api.post('/v1/locks', { agentId: bobB.id, resources: ['lib/x.ts'], ttlMs: 60_000, namespace: 'team-b' });
        assert.equal(underInB.status, 200, 'a directory in team-a covers nothing in team-b');
        assert.equal((await api.post('/v1/locks', { agentId: bobA.id, resources: ['lib/x.ts'], ttlMs: 60_000, namespace: 'team-a' })).status, 409);
        // An agent locks in its own namespace only: naming another finds no such agent there.
        const astray = await api.post('/v1/locks', { agentId: bobB.id, resources: ['astray.ts'], ttlMs: 60_000, namespace: 'team-a' });
        assert.deepEqual([astray.status, astray.body.error.code], [404, 'FLEETD_ERR_NOT_FOUND']);

        // Lists: all for a key reaching every namespace, one when named (listing is for read keys, not agents' tokens).
        const all = await lockIds(api);
        assert.equal(all.length, 5);
        assert.deepEqual(await lockIds(api, '&namespace=team-a'), [inA.body.id, dir.body.id].sort());
        assert.deepEqual(await lockIds(api, '&namespace=default'), [inDefault.body.id]);
        assert.deepEqual(await lockIds(api, `&namespace=team-b&agentId=${bobB.id}`), [inB.body.id, underInB.body.id].sort());

        // By id, another namespace's lock is not found, as one that does not exist: not 403, and nothing changes.
        const release = await asAlice.delete(`/v1/locks/${inB.body.id}`);
        assert.deepEqual([release.status, release.body.error.code], [404, 'FLEETD_ERR_NOT_FOUND']);
        const none = await asAlice.delete('/v1/locks/no-such-lock');
        assert.equal(release.body.error.message.replace(inB.body.id, 'ID'), none.body.error.message.replace('no-such-lock', 'ID'), 'the answer for an id that does not exist');
        assert.equal((await asAlice.post(`/v1/locks/${inB.body.id}/renew`, { ttlMs: 1_000 })).status, 404);
        assert.equal((await api.get(`/v1/locks/${inB.body.id}`)).body.expiresAt, inB.body.expiresAt, 'neither released nor renewed');
        // Within its namespace, another agent's lock is still a 403, as before namespaces.
        const bobsDefault = await api.post('/v1/locks', { agentId: bob.id, resources: ['mine.txt'], ttlMs: 60_000 });
        assert.equal((await asAlice.delete(`/v1/locks/${bobsDefault.body.id}`)).status, 403);
        // An agent's token cannot lock in another namespace.
        const elsewhere = await asAlice.post('/v1/locks', { agentId: alice.id, resources: ['x'], ttlMs: 1_000, namespace: 'team-a' });
        assert.deepEqual([elsewhere.status, elsewhere.body.error.code], [404, 'FLEETD_ERR_NOT_FOUND']);

        // The key reaching everything releases in any namespace; the other namespace's lock stays.
        assert.equal((await api.delete(`/v1/locks/${inA.body.id}`)).status, 200);
        assert.equal((await api.get(`/v1/locks/${inB.body.id}`)).status, 200);
      });
    });

    it('keeps one line of waiting requests per namespace', async () => {
      await withServer(store(), async (server) => {
        const { api } = server;
        const [alice, bob] = [await api.registerAgent(['dev'], { namespace: 'team-a' }), await api.registerAgent(['dev'], { namespace: 'team-a' })];
        const [aliceB, bobB] = [await api.registerAgent(['dev'], { namespace: 'team-b' }), await api.registerAgent(['dev'], { namespace: 'team-b' })];
        const held = (await api.post('/v1/locks', { agentId: alice.id, resources: ['w/x.ts'], ttlMs: 60_000, namespace: 'team-a' })).body;
        // bob waits in team-a's line for the directory above it.
        const waiting = api.post('/v1/locks', { agentId: bob.id, resources: ['w/'], ttlMs: 60_000, waitMs: 10_000, namespace: 'team-a' });
        await eventually(async () => {
          const behind = await api.post('/v1/locks', { agentId: alice.id, resources: ['w/y.ts'], ttlMs: 1_000, namespace: 'team-a' });
          return behind.status === 409 && behind.body.error.details.waitingAhead === 1;
        }, 5_000, "bob's request in team-a's line");
        // The same resources in team-b are behind nobody, whether the request waits or not.
        const other = await api.post('/v1/locks', { agentId: aliceB.id, resources: ['w/y.ts'], ttlMs: 60_000, namespace: 'team-b' });
        assert.equal(other.status, 200, JSON.stringify(other.body));
        const otherWaiting = await api.post('/v1/locks', { agentId: bobB.id, resources: ['w/z.ts'], ttlMs: 60_000, waitMs: 10_000, namespace: 'team-b' });
        assert.equal(otherWaiting.status, 200, JSON.stringify(otherWaiting.body));
        // Team-b's lock under w/ is not in the way of team-a's waiter: once team-a's holder goes, it gets its lock.
        assert.equal((await api.delete(`/v1/locks/${held.id}`)).status, 200);
        const got = await waiting;
        assert.equal(got.status, 200, JSON.stringify(got.body));
        assert.deepEqual([got.body.namespace, got.body.resources], ['team-a', ['w/']]);
      });
    });

    it('names schedules within their namespace: lists filtered, 404 across, each firing into its own namespace', async () => {
      await withServer(store(), async (server) => {
        const { api } = server;
        const nightly = (namespace?: string) => ({ name: 'nightly', cron: '0 2 * * *', task: { type: 'crawl' }, ...(namespace ? { namespace } : {}) });
        const a = await api.post('/v1/schedules', nightly('team-a'));
        const b = await api.post('/v1/schedules', nightly('team-b'));
        assert.deepEqual([a.status, a.body.namespace, b.status, b.body.namespace], [201, 'team-a', 201, 'team-b']);
        const again = await api.post('/v1/schedules', nightly('team-a'));
        assert.deepEqual([again.status, again.body.error.code], [409, 'FLEETD_ERR_SCHEDULE_EXISTS']);

        const names = async (query = '') => ((await api.get(`/v1/schedules?limit=100${query}`)).body.items as any[]).map((s) => `${s.namespace}/${s.name}`);
        assert.deepEqual(await names('&namespace=team-a'), ['team-a/nightly']);
        assert.deepEqual(await names(), ['team-a/nightly', 'team-b/nightly']);
        assert.deepEqual(await names('&namespace=team-c'), []);

        // By name: in the namespace named, or the one the key writes to (default): another's is not found.
        assert.equal((await api.get('/v1/schedules/nightly?namespace=team-b')).body.namespace, 'team-b');
        const missing = await api.get('/v1/schedules/nightly');
        assert.deepEqual([missing.status, missing.body.error.code], [404, 'FLEETD_ERR_NOT_FOUND']);
        assert.equal((await api.get('/v1/schedules/nightly?namespace=team-c')).status, 404);
        assert.equal((await api.delete('/v1/schedules/nightly')).status, 404);
        assert.equal((await api.post('/v1/schedules/nightly/pause')).status, 404);
        const paused = await api.post('/v1/schedules/nightly/pause?namespace=team-a');
        assert.deepEqual([paused.status, paused.body.paused], [200, true]);
        assert.equal((await api.get('/v1/schedules/nightly?namespace=team-b')).body.paused, false, "team-b's is not paused");
        assert.equal((await api.post('/v1/schedules/nightly/resume?namespace=team-a')).body.paused, false);
        assert.equal((await api.delete('/v1/schedules/nightly?namespace=team-b')).status, 200);
        assert.deepEqual(await names(), ['team-a/nightly']);

        // The same name fires in two namespaces, each its own task, under keys that do not collide.
        const tick = (namespace: string) => ({ name: 'tick', cron: '* * * * * *', catchUp: 'none', task: { type: `tick-${namespace}` }, namespace });
        assert.equal((await api.post('/v1/schedules', tick('team-a'))).status, 201);
        assert.equal((await api.post('/v1/schedules', tick('team-b'))).status, 201);
        const firstOf = async (type: string) => (await api.get(`/v1/tasks?type=${type}&limit=1`)).body.items[0];
        await eventually(async () => (await firstOf('tick-team-a')) !== undefined && (await firstOf('tick-team-b')) !== undefined, 10_000, 'a fire of each');
        assert.match((await firstOf('tick-team-a')).idempotencyKey, /^schedule:team-a\/tick:/);
        assert.match((await firstOf('tick-team-b')).idempotencyKey, /^schedule:team-b\/tick:/);
        for (const ns of ['team-a', 'team-b']) assert.equal((await api.delete(`/v1/schedules/tick?namespace=${ns}`)).status, 200);
      });
    });
  });
}

describe('namespaces of locks and schedules: bad names, lock events', () => {
  it('refuses a namespace that is not a name (400), changing nothing', async () => {
    await withServer({}, async (server) => {
      const { api } = server;
      const agent = await api.registerAgent(['dev']);
      const badNames = ['Team-A', '-x', 'a b', 'a/b', '*', 'x'.repeat(64), ''];
      for (const namespace of badNames) {
        const lock = await api.post('/v1/locks', { agentId: agent.id, resources: ['r'], ttlMs: 1_000, namespace });
        assert.deepEqual([lock.status, lock.body.error.code], [400, 'FLEETD_ERR_VALIDATION'], `lock in ${JSON.stringify(namespace)}`);
        const schedule = await api.post('/v1/schedules', { name: 'n', cron: '0 2 * * *', task: { type: 'x' }, namespace });
        assert.deepEqual([schedule.status, schedule.body.error.code], [400, 'FLEETD_ERR_VALIDATION'], `schedule in ${JSON.stringify(namespace)}`);
        const q = encodeURIComponent(namespace);
        for (const path of [`/v1/locks?namespace=${q}`, `/v1/schedules?namespace=${q}`, `/v1/schedules/n?namespace=${q}`]) {
          assert.equal((await api.get(path)).status, 400, path);
        }
        assert.equal((await api.delete(`/v1/schedules/n?namespace=${q}`)).status, 400);
      }
      assert.deepEqual((await api.get('/v1/locks')).body.items, []);
      assert.deepEqual((await api.get('/v1/schedules')).body.items, []);
    });
  });

  it('sends an observer only the lock events of namespaces its credential reaches, live and replayed', async () => {
    // The stream is opened as the gateway opens it, on a socket of its own, for a credential that
    // reaches team-a only, over the server's real bus.
    await withServer({ eventBatchMs: 20 }, async (server) => {
      const { api } = server;
      const connections = new Connections({ maxConnections: 10, maxPerOwner: 10, maxBufferedBytes: 1 << 20, pingMs: 60_000, deflateMinChars: 8 * 1024 });
      const stream = new EventStream(server.fleet, server.config, connections, pino({ enabled: false }));
      const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
      const peers: Peer[] = [];
      try {
        stream.start();
        let resume: { since: number } | undefined;
        wss.on('connection', (socket) => stream.open(socket, 'team-a-key', resume, ['team-a']));
        await once(wss, 'listening');
        const url = `ws://127.0.0.1:${(wss.address() as { port: number }).port}`;
        const observe = async () => {
          const peer = await connect(url);
          peers.push(peer);
          peer.send({ type: 'subscribe', topics: ['locks'] });
          await peer.next('subscribed');
          return peer;
        };
        const live = await observe();
        const agents = { 'team-a': await api.registerAgent(['dev'], { namespace: 'team-a' }), 'team-b': await api.registerAgent(['dev'], { namespace: 'team-b' }) };
        const lock = async (namespace: 'team-a' | 'team-b') => (await api.post('/v1/locks', { agentId: agents[namespace].id, resources: ['same.txt'], ttlMs: 60_000 })).body;
        const hidden = await lock('team-b');
        const shown = await lock('team-a');
        await api.delete(`/v1/locks/${hidden.id}`);
        await api.delete(`/v1/locks/${shown.id}`);
        const seen = async (peer: Peer) => {
          while (!peer.received.some((m) => m.type === 'events' && m.events.some((e: any) => e.name === 'lock.released' && e.data.lock.id === shown.id))) {
            await peer.next('events');
          }
          return peer.received.filter((m) => m.type === 'events').flatMap((m) => m.events.map((e: any) => [e.name, e.data.lock.namespace]));
        };
        const expected = [['lock.acquired', 'team-a'], ['lock.released', 'team-a']];
        assert.deepEqual(await seen(live), expected, "team-b's lock, acquired and released first, is never sent");
        resume = { since: 0 };
        assert.deepEqual(await seen(await observe()), expected, 'nor replayed');
      } finally {
        for (const peer of peers) await peer.close();
        stream.stop();
        connections.stop();
        wss.close();
      }
    });
  });

  it('sends lock events with their namespace', async () => {
    await withServer({ eventBatchMs: 20 }, async (server) => {
      const { api } = server;
      const peer = await connect(`${server.url}/v1/events`, { authorization: `Bearer ${server.adminKey}` });
      try {
        peer.send({ type: 'subscribe', topics: ['locks'] });
        await peer.next('subscribed');
        const agent = await api.registerAgent(['dev'], { namespace: 'team-e' });
        const lock = (await api.post('/v1/locks', { agentId: agent.id, resources: ['e.txt'], ttlMs: 60_000 })).body;
        const batch = await peer.next('events', (m) => m.events.some((e: any) => e.name === 'lock.acquired'));
        const event = batch.events.find((e: any) => e.name === 'lock.acquired');
        assert.deepEqual([event.data.lock.id, event.data.lock.namespace], [lock.id, 'team-e']);
      } finally {
        await peer.close();
      }
    });
  });
});
