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
    const child = cli(['agent', '--url', server.url, '--capabilities', 'echo,sleep', '--concurrency', '8']);
    let output = '';
    child.stdout!.on('data', (d) => (output += d));
    await nextEvent(server, 'agent.registered', () => true, 15_000);
    const echo = await server.api.submit({ type: 'echo', payload: { hello: 'world' } });
    const sleep = await server.api.submit({ type: 'sleep', payload: { ms: 50 } });
    await Promise.all([
      nextEvent(server, 'task.completed', (e) => e.task.id === echo.id, 15_000),
      nextEvent(server, 'task.completed', (e) => e.task.id === sleep.id, 15_000),
    ]);
    assert.deepEqual((await server.api.get(`/v1/tasks/${echo.id}`)).body.result, { hello: 'world' });
    assert.deepEqual((await server.api.get(`/v1/tasks/${sleep.id}`)).body.result, { slept: 50 });
    const exited = once(child, 'exit');
    child.kill('SIGINT');
    assert.deepEqual(await exited, [0, null]);
    assert.match(output, /connected to .* \(ws\)/);
    assert.match(output, new RegExp(`task ${echo.id} done`));
  });

  it('refuses a capability it has no handler for, with a clear message', async () => {
    const child = cli(['agent', '--url', server.url, '--capabilities', 'paint']);
    let stderr = '';
    child.stderr!.on('data', (d) => (stderr += d));
    const [code] = await once(child, 'exit');
    assert.equal(code, 2);
    assert.match(stderr, /--capabilities: the demo agent has no handler for paint/);
  });
});
