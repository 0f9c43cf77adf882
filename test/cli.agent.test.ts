import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import { nextEvent, startTestServer, type TestServer } from './helpers.js';

const cli = (args: string[]) =>
  spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });

describe('fleetd agent (the demo agent)', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(() => server.stop());

  it('works echo and sleep tasks from a separate process and exits cleanly on SIGINT', async () => {
    const child = cli(['agent', '--url', server.url, '--api-key', server.adminKey!, '--capabilities', 'echo,sleep', '--concurrency', '8']);
    let output = '';
    child.stdout!.on('data', (d) => (output += d));
    child.stderr!.on('data', (d) => (output += d));
    try {
      // Generous bounds: a process started through tsx on a crawling shared machine can take a while.
      await nextEvent(server, 'agent.registered', () => true, 30_000);
      // Listening before submitting: a pushed task can be done before the submit's answer is read.
      const completed = Promise.all([
        nextEvent(server, 'task.completed', (e) => e.task.type === 'echo', 30_000),
        nextEvent(server, 'task.completed', (e) => e.task.type === 'sleep', 30_000),
      ]);
      const echo = await server.api.submit({ type: 'echo', payload: { hello: 'world' } });
      await server.api.submit({ type: 'sleep', payload: { ms: 50 } });
      const [doneEcho, doneSleep] = await completed.catch((err: Error) => {
        throw new Error(`${err.message}; the agent said:\n${output}`);
      });
      assert.equal(doneEcho.task.id, echo.id);
      assert.deepEqual((await server.api.get(`/v1/tasks/${doneEcho.task.id}`)).body.result, { hello: 'world' });
      assert.deepEqual((await server.api.get(`/v1/tasks/${doneSleep.task.id}`)).body.result, { slept: 50 });
      const exited = once(child, 'exit');
      child.kill('SIGINT');
      assert.deepEqual(await exited, [0, null]);
      assert.match(output, /connected to .* \(ws\)/);
      assert.match(output, new RegExp(`task ${echo.id} done`));
    } finally {
      // A failed run must not leave the agent process holding the test runner open.
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  });

  it('refuses a capability it has no handler for, with a clear message', async () => {
    const child = cli(['agent', '--url', server.url, '--api-key', server.adminKey!, '--capabilities', 'paint']);
    let stderr = '';
    child.stderr!.on('data', (d) => (stderr += d));
    const [code] = await once(child, 'exit');
    assert.equal(code, 2);
    assert.match(stderr, /--capabilities: the demo agent has no handler for paint/);
  });
});
