import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { it } from 'node:test';

/**
 * The Python SDK's own tests (pytest, from Debian's python3-pytest), run by `npm test`. They start
 * the compiled fleetd themselves, so `npm test`'s build comes first.
 */
it('the Python SDK passes its tests against a real fleetd', async () => {
  const pytest = spawn('/usr/bin/python3', ['-m', 'pytest', 'clients/python/tests', '-q', '-p', 'no:cacheprovider'], {
    cwd: join(import.meta.dirname, '..'),
    env: { ...process.env, FLEETD_NODE: process.execPath },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  pytest.stdout.on('data', (d) => (output += d));
  pytest.stderr.on('data', (d) => (output += d));
  try {
    const [code] = await once(pytest, 'exit');
    assert.equal(code, 0, output);
    assert.match(output, / passed/);
  } finally {
    if (pytest.exitCode === null && pytest.signalCode === null) pytest.kill('SIGKILL');
  }
});
