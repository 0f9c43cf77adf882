import assert from 'node:assert/strict';
import { once } from 'node:events';
import { rmSync } from 'node:fs';
import { it } from 'node:test';
import { kill9, startFleetdProcess, tempDir } from './helpers.js';

it('a fleetd whose log pipe is gone (EPIPE) shuts down instead of running on unseen', { timeout: 20_000 }, async () => {
  const dataDir = tempDir();
  // Every request is logged as slow, so the next request writes to the broken pipe.
  const { child, api } = await startFleetdProcess(dataDir, { FLEETD_SLOW_REQUEST_MS: '0' });
  try {
    const exited = once(child, 'exit');
    child.stdout!.destroy(); // the reader goes away, as when the process that ran fleetd dies
    assert.equal((await api.get('/v1/stats')).status, 200);
    const [code, signal] = await exited;
    assert.deepEqual({ code, signal }, { code: 0, signal: null }, 'a graceful shutdown, as on SIGTERM');
  } finally {
    await kill9(child);
    rmSync(dataDir, { recursive: true, force: true });
  }
});
