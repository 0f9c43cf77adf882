import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, it } from 'node:test';
import { ConfigError, defaultConfig, resolveConfig } from '../src/config.js';
import { fleetdBin } from './helpers.js';

const run = promisify(execFile);


describe('configuration', () => {
  it('takes defaults, then FLEETD_* variables, then overrides, and freezes the result', () => {
    const c = resolveConfig({ port: 9000 }, { FLEETD_PORT: '8000', FLEETD_DATA_DIR: '/tmp/x', FLEETD_TASK_LEASE_MS: '5000' });
    assert.equal(c.port, 9000);
    assert.equal(c.dataDir, '/tmp/x');
    assert.equal(c.taskLeaseMs, 5000);
    assert.equal(c.host, defaultConfig.host);
    assert.ok(Object.isFrozen(c));
  });

  it('names the setting and the reason when a value is wrong', () => {
    assert.throws(() => resolveConfig({}, { FLEETD_PORT: 'eighty' }), (e: ConfigError) => e.setting === 'FLEETD_PORT' && /whole number/.test(e.message));
    assert.throws(() => resolveConfig({}, { FLEETD_TASK_LEASE_MS: '5' }), /FLEETD_TASK_LEASE_MS: 5 is below the minimum of 100/);
    assert.throws(() => resolveConfig({ agentStaleMs: 5000, agentOfflineMs: 1000 }, {}), /agentOfflineMs: \(1000\) must be greater than agentStaleMs \(5000\)/);
    assert.throws(() => resolveConfig({ sqliteSynchronous: 'OFF' as never }, {}), /not one of NORMAL, FULL/);
    assert.throws(() => resolveConfig({ colour: 'red' } as never, {}), /colour: is not a fleetd setting/);
  });

  it('fleetd start --help lists every setting with its variable and default', async () => {
    const { stdout } = await run(process.execPath, [fleetdBin, 'start', '--help']);
    for (const variable of ['FLEETD_PORT', 'FLEETD_HOST', 'FLEETD_DATA_DIR', 'FLEETD_AGENT_OFFLINE_MS']) {
      assert.match(stdout, new RegExp(variable));
    }
  });

  it('fleetd start refuses a bad setting with a clear message and exit code 2', async () => {
    await assert.rejects(
      run(process.execPath, [fleetdBin, 'start'], { env: { ...process.env, FLEETD_PORT: '99999' } }),
      (err: { code: number; stderr: string }) => err.code === 2 && /invalid setting port: 99999 is above 65535/.test(err.stderr),
    );
  });
});
