import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Browser, Page, WebSocket as PageSocket } from 'playwright-core';
import { signedInPage, startWithBrowser } from './browser.js';
import { eventually, startTestServer, type TestServer } from './helpers.js';
import { CuttingProxy } from './tcp-proxy.js';

const WAIT = { timeout: 30_000 };

/** The dashboard behind a real TCP proxy that cuts its connections: its new socket resumes after the last event it saw. */
describe('dashboard: the event stream resumed after a cut', () => {
  let server: TestServer;
  let browser: Browser;
  let page: Page;
  const proxy = new CuttingProxy();
  let viaProxy: string;
  const sockets: { socket: PageSocket; frames: string[] }[] = [];

  before(async () => {
    [server, browser] = await startWithBrowser(startTestServer());
    viaProxy = await proxy.start(server.url);
    page = await signedInPage(browser, server.adminKey);
    page.on('websocket', (socket) => {
      const seen = { socket, frames: [] as string[] };
      sockets.push(seen);
      socket.on('framereceived', (f) => seen.frames.push(String(f.payload)));
    });
  });

  after(async () => {
    await browser?.close();
    await proxy.stop();
    await server?.stop();
  });

  it('opens its next socket with ?since=&epoch= and gets the events it missed replayed', async () => {
    await page.goto(`${viaProxy}/#/tasks`);
    await page.waitForSelector('[data-connection=live]', WAIT);
    // The header says live when the socket opens; the tasks view subscribes a moment later, and a task
    // submitted before fleetd has that subscription reaches the page by the view's reload, not as an
    // event. Submit until one arrives as an event (on any socket: a loaded machine may have opened
    // more than one), so that the page has a number to resume after.
    let first = await server.api.submit({ type: 'resume.before' });
    await eventually(
      async () => {
        if (sockets.some((s) => s.frames.some((f) => f.includes('"task.created"') && f.includes(`"id":${first.id},`)))) return true;
        if (Date.now() - Date.parse(first.createdAt) > 1_000) first = await server.api.submit({ type: 'resume.before' });
        return false;
      },
      WAIT.timeout,
      'a task.created event on the page',
    );
    await page.waitForSelector(`[data-task-id="${first.id}"]`, WAIT);
    const opened = sockets.length;
    assert.doesNotMatch(sockets[0].socket.url(), /since=/);

    proxy.refusing = true;
    proxy.cut();
    await page.waitForSelector('[data-connection=offline], [data-connection=polling]', WAIT);
    const missed = await server.api.submit({ type: 'resume.away' });
    proxy.refusing = false;

    await eventually(() => sockets.length > opened, WAIT.timeout, 'a new socket');
    const url = new URL(sockets.at(-1)!.socket.url());
    assert.ok(Number(url.searchParams.get('since')) > 0, url.href);
    assert.match(url.searchParams.get('epoch') ?? '', /^[0-9a-f-]{36}$/);
    // The event of the task submitted while the socket was down arrives replayed on the new socket.
    await eventually(
      () =>
        sockets.at(-1)!.frames.some((f) => {
          const m = JSON.parse(f);
          return m.type === 'events' && m.events.some((e: any) => e.name === 'task.created' && e.data.task.id === missed.id && e.seq > Number(url.searchParams.get('since')));
        }),
      WAIT.timeout,
      'the missed task.created replayed',
    );
    assert.ok(!sockets.at(-1)!.frames.some((f) => JSON.parse(f).type === 'gap'), 'no gap: the window held it');
    await page.waitForSelector(`[data-task-id="${missed.id}"]`, WAIT);
  });
});
