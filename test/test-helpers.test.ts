import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { it } from 'node:test';
import { kill9, listeningUrl } from './helpers.js';

it('a server process that never says it listens is killed, not left running to hold the suite open', async () => {
  const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const exited = once(child, 'exit');
    await assert.rejects(listeningUrl(child, 'fleetd is listening', 300), /did not start listening within 300 ms/);
    assert.deepEqual(await exited, [null, 'SIGKILL']);
  } finally {
    await kill9(child);
  }
});
