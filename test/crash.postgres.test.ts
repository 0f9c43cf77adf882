import { rmSync } from 'node:fs';
import { describe, it } from 'node:test';
import { kill9UnderLoad } from './chaos/kill9-under-load.js';
import { startFleetdProcess, tempDir } from './helpers.js';
import { dropSchema, TEST_DATABASE_URL, uniqueSchema } from './store/postgres.js';

describe('crash on PostgreSQL', { timeout: 300_000 }, () => {
  it('kill -9 at three random moments of 10,000 tasks in flight: nothing acknowledged is lost, nothing completes twice', async (t) => {
    const dataDir = tempDir();
    const schema = uniqueSchema('fleetd_crash');
    const env = { FLEETD_DATABASE_URL: TEST_DATABASE_URL, FLEETD_DATABASE_SCHEMA: schema };
    try {
      await kill9UnderLoad(t, { start: () => startFleetdProcess(dataDir, env), tasks: 10_000, crashes: 3 });
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
      await dropSchema(schema);
    }
  });
});
