import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import pg from 'pg';
import { cacheNamespace } from '../src/cache/namespace.js';
import { TEST_REDIS_URL } from './cluster/node-process.js';
import { startTestServer, type TestServer } from './helpers.js';
import { TEST_DATABASE_URL, uniqueSchema } from './store/postgres.js';

const onPostgres = (databaseUrl: string, databaseSchema = 'public') => ({ databaseUrl, databaseSchema, dataDir: '/var/lib/fleetd' });

describe('cache namespace', () => {
  it('names the database and schema of a PostgreSQL store, without its password', () => {
    const fleet = cacheNamespace(onPostgres('postgres://fleetd:secret@db.internal:5432/fleet', 'blue'));
    assert.equal(cacheNamespace(onPostgres('postgres://fleetd:rotated@db.internal:5432/fleet', 'blue')), fleet, 'a new password is the same store');
    assert.equal(cacheNamespace(onPostgres('postgresql://fleetd:secret@db.internal/fleet', 'blue')), fleet, 'the default port and scheme spelling are the same store');
    assert.notEqual(cacheNamespace(onPostgres('postgres://fleetd:secret@db.internal:5432/fleet', 'green')), fleet, 'another schema');
    assert.notEqual(cacheNamespace(onPostgres('postgres://fleetd:secret@db.internal:5432/other', 'blue')), fleet, 'another database');
    assert.notEqual(cacheNamespace(onPostgres('postgres://fleetd:secret@db2.internal:5432/fleet', 'blue')), fleet, 'another server');
    assert.doesNotMatch(fleet, /secret|internal/);
  });

  it('names an embedded SQLite store by its folder', () => {
    const sqlite = (dataDir: string) => cacheNamespace({ databaseUrl: '', databaseSchema: 'public', dataDir });
    assert.equal(sqlite('/srv/a'), sqlite('/srv/a/'));
    assert.notEqual(sqlite('/srv/a'), sqlite('/srv/b'));
  });
});

describe('two fleets on one Redis', { timeout: 60_000 }, () => {
  const servers: TestServer[] = [];
  after(async () => {
    const client = new pg.Client({ connectionString: TEST_DATABASE_URL });
    await client.connect();
    for (const server of servers) {
      await server.stop();
      await client.query(`DROP SCHEMA IF EXISTS ${server.config.databaseSchema} CASCADE`);
    }
    await client.end();
  });

  it('never answer from each other’s cached responses', async () => {
    // Two fleets in one PostgreSQL database (a schema each) sharing one Redis L2.
    for (const color of ['blue', 'green']) {
      servers.push(await startTestServer({ databaseUrl: TEST_DATABASE_URL, databaseSchema: uniqueSchema(`fleetd_${color}`), redisUrl: TEST_REDIS_URL }));
    }
    const [blue, green] = servers;
    const submitted = await blue.api.submit({ type: 'namespaced', payload: { fleet: 'blue' } });
    const onBlue = await blue.api.get('/v1/tasks?type=namespaced');
    assert.equal(onBlue.headers.get('x-cache'), 'miss');
    assert.deepEqual(onBlue.body.items.map((t: { id: number }) => t.id), [submitted.id]);

    const onGreen = await green.api.get('/v1/tasks?type=namespaced');
    assert.equal(onGreen.headers.get('x-cache'), 'miss', 'green computed its own answer');
    assert.deepEqual(onGreen.body.items, [], 'green has no tasks of its own');
  });
});
