import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { signedInPage, snap, startWithBrowser } from './browser.js';
import { eventually, kill9, startTestServer, type TestServer } from './helpers.js';

const WAIT = { timeout: 20_000 };

/** The task page while a real agent process works the task: its progress bar and live log follow the agent. */
describe('dashboard: a running task\'s progress and live log', () => {
  let server: TestServer;
  let browser: Browser;
  let page: Page;
  let agent: ChildProcess | undefined;

  before(async () => {
    [server, browser] = await startWithBrowser(startTestServer());
    page = await signedInPage(browser, server.adminKey);
    agent = spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/streaming-agent.ts'], {
      env: { ...process.env, FLEETD_URL: server.url, FLEETD_API_KEY: server.adminKey, TRANSPORT: 'ws' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await once(agent.stdout!, 'data');
  });

  after(async () => {
    if (agent) await kill9(agent);
    await browser?.close();
    await server?.stop();
  });

  it('fills the progress bar and the live log as the agent reports, without reloading the page', async () => {
    const task = await server.api.submit({ type: 'stream', payload: { chunks: 200, everyMs: 40 } });
    await page.goto(`${server.url}/#/tasks/${task.id}`);
    await page.waitForSelector('[data-connection=live]', WAIT);

    // Part way: the bar shows a fraction and the log has output, while the task still runs.
    await page.waitForSelector('[data-testid=progress]', WAIT);
    const midway = Number(await page.getAttribute('[data-testid=progress]', 'data-progress'));
    assert.ok(midway > 0 && midway < 1, `progress ${midway} while it runs`);
    assert.equal((await server.api.get(`/v1/tasks/${task.id}`)).body.status, 'leased');
    await page.waitForSelector('[data-testid=live-log] .output', WAIT);
    assert.match(await page.textContent('[data-testid=live-log]') ?? '', /\[info\] starting 200 chunks/);
    await snap(page, 'task-live-log');

    // It keeps growing live, then ends at 100 % with every chunk the agent wrote, in order.
    await eventually(async () => (await page.getAttribute('[data-testid=progress]', 'data-progress')) === '1', WAIT.timeout, 'the bar at 100 %');
    await page.waitForSelector('[data-status=completed]', WAIT);
    const result = (await server.api.get(`/v1/tasks/${task.id}`)).body.result as { text: string };
    await eventually(async () => (await page.locator('[data-testid=live-log] .output').allTextContents()).join('') === result.text, WAIT.timeout, 'the whole output in the log');
    assert.match(await page.textContent('[data-testid=progress]') ?? '', /100%.*200 of 200/);
    assert.match(await page.textContent('[data-testid=live-log]') ?? '', /\[warn\] done/);
  });
});
