import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { describe, it } from 'node:test';
import { Redis } from 'ioredis';
import pg from 'pg';
import { CHROMIUM } from './browser.js';
import { TEST_REDIS_URL } from './cluster/node-process.js';
import { TEST_DATABASE_URL } from './store/postgres.js';

/**
 * What the suite needs besides `npm install`, each checked at once and named with what to install,
 * so that a fresh machine learns in a second what the other tests would fail on later and less
 * clearly. `.ci/run` installs and starts all of it; docs/testing.md explains each.
 */
describe('what the suite needs', () => {
  const fix = 'run .ci/run as root (it installs and starts everything; see docs/testing.md), or';

  it('PostgreSQL, with a database for the tests', async () => {
    const client = new pg.Client({ connectionString: TEST_DATABASE_URL, connectionTimeoutMillis: 5_000 });
    try {
      await client.connect();
      await client.query('SELECT 1');
    } catch (err) {
      assert.fail(`PostgreSQL is not reachable at ${TEST_DATABASE_URL} (${(err as Error).message}): ${fix} start PostgreSQL and create the database, or set FLEETD_TEST_DATABASE_URL`);
    } finally {
      await client.end().catch(() => {});
    }
  });

  it('Redis', async () => {
    const redis = new Redis(TEST_REDIS_URL, { lazyConnect: true, connectTimeout: 5_000, maxRetriesPerRequest: 0, retryStrategy: () => null });
    try {
      await redis.connect();
      assert.equal(await redis.ping(), 'PONG');
    } catch (err) {
      assert.fail(`Redis is not reachable at ${TEST_REDIS_URL} (${(err as Error).message}): ${fix} start redis-server, or set FLEETD_TEST_REDIS_URL`);
    } finally {
      redis.disconnect();
    }
  });

  it('Chromium, for the dashboard tests', () => {
    assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: ${fix} apt-get install -y chromium`);
  });

  it('libfaketime, for the clock-jump test', () => {
    const faketime = spawnSync('faketime', ['-f', '+0', 'true']);
    assert.equal(faketime.status, 0, `faketime is missing: ${fix} apt-get install -y faketime`);
  });

  it('promtool, to check the metrics format', () => {
    const promtool = spawnSync('promtool', ['--version']);
    assert.equal(promtool.status, 0, `promtool is missing: ${fix} apt-get install -y prometheus`);
  });

  it("Debian's Python with pytest, websockets and httpx, for the Python SDK's tests", () => {
    const python = spawnSync('/usr/bin/python3', ['-c', 'import pytest, websockets, httpx']);
    assert.equal(python.status, 0, `/usr/bin/python3 or its packages are missing: ${fix} apt-get install -y python3 python3-pytest python3-websockets python3-httpx`);
  });
});
