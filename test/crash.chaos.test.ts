import { rmSync } from 'node:fs';
import { describe, it } from 'node:test';
import { kill9UnderLoad } from './chaos/kill9-under-load.js';
import { startFleetdProcess, tempDir } from './helpers.js';

describe('crash on SQLite', { timeout: 300_000 }, () => {
  it('kill -9 at three random moments of 10,000 tasks in flight: nothing acknowledged is lost, nothing completes twice', async (t) => {
    const dataDir = tempDir();
    try {
      await kill9UnderLoad(t, { start: () => startFleetdProcess(dataDir), tasks: 10_000, crashes: 3 });
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
