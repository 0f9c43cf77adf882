import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { it } from 'node:test';
import { within } from './helpers.js';

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
    // Bounded, so that a Python test that hangs fails this one (and pytest is killed) rather than the whole run hanging.
    const [code] = await within(once(pytest, 'exit'), 15 * 60_000, 'pytest to finish').catch((err: Error) => {
      throw new Error(`${err.message}; its output: ${output.slice(-4_000)}`);
    });
    assert.equal(code, 0, output);
    assert.match(output, / passed/);
  } finally {
    if (pytest.exitCode === null && pytest.signalCode === null) pytest.kill('SIGKILL');
  }
});
