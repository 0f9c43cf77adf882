import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { signIn, startWithBrowser } from './browser.js';
import { startTestServer, type TestServer } from './helpers.js';

const WAIT = { timeout: 20_000 };

/** The dashboard against a fleetd with authentication on, as an operator meets it. */
describe('dashboard sign-in', () => {
  let server: TestServer;
  let browser: Browser;

  before(async () => {
    [server, browser] = await startWithBrowser(startTestServer());
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  /** A page in a context of its own (its own local storage), counting the event sockets it opens. */
  async function newPage(key?: string): Promise<{ page: Page; sockets: () => number }> {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page = await context.newPage();
    await signIn(page, key);
    let opened = 0;
    page.on('websocket', (ws) => {
      if (ws.url().includes('/v1/events')) opened++;
    });
    return { page, sockets: () => opened };
  }

  async function readKey(name: string): Promise<{ id: string; secret: string }> {
    const res = await server.api.post('/v1/keys', { name, scope: 'read' });
    assert.equal(res.status, 201);
    return { id: res.body.key.id, secret: res.body.secret };
  }

  it('asks for a key when fleetd wants one, works with a read key, and signs out', async () => {
    const { page } = await newPage();
    await page.goto(server.url + '/');
    await page.waitForSelector('[data-connection=refused]', WAIT);
    assert.match(await page.innerText('[data-testid=refusal]'), /needs a credential/);

    await page.fill('input[name=apiKey]', 'fk_not-a-key');
    await page.click('.sign-in button[type=submit]');
    await page.waitForFunction(() => /not known or has been revoked/.test(document.querySelector('[data-testid=refusal]')?.textContent ?? ''), undefined, WAIT);

    const key = await readKey('dashboard');
    await page.fill('input[name=apiKey]', key.secret);
    await page.click('.sign-in button[type=submit]');
    await page.waitForSelector('[data-ready=overview]', WAIT);
    await page.waitForSelector('[data-connection=live]', WAIT);
    assert.equal(await page.evaluate(() => localStorage.getItem('fleetd.apiKey')), key.secret);

    // A read key may watch but not act: cancelling says so and keeps the operator signed in.
    const task = await server.api.submit({ type: 'signin.check' });
    await page.goto(`${server.url}/#/tasks/${task.id}`);
    await page.click('text=Cancel task', WAIT);
    await page.waitForSelector('.detail .error', WAIT);
    assert.match(await page.innerText('.detail .error'), /submit/);
    assert.equal((await server.api.get(`/v1/tasks/${task.id}`)).body.status, 'queued');
    assert.equal(await page.getAttribute('[data-connection]', 'data-connection'), 'live');

    await page.click('text=Sign out');
    await page.waitForSelector('input[name=apiKey]', WAIT);
    assert.equal(await page.evaluate(() => localStorage.getItem('fleetd.apiKey')), null);
    await page.context().close();
  });

  it('shows a credential that may not read as disconnected with the reason, and does not keep reconnecting', async () => {
    const agent = await server.api.registerAgent(['echo']);
    const { page, sockets } = await newPage(agent.token);
    await page.goto(server.url + '/#/tasks');
    await page.waitForSelector('[data-connection=refused]', WAIT);
    assert.match(await page.innerText('[data-testid=refusal]'), /agent token acts only for its own agent/);
    const afterRefusal = sockets();
    // Reconnections back off from 1 s (web/src/live.ts): a page still trying would open its next
    // socket a second after the refusal, well within 2.5 s.
    await new Promise((r) => setTimeout(r, 2_500));
    assert.equal(sockets(), afterRefusal, 'no socket opened after the refusal');
    assert.ok(afterRefusal <= 1, `${afterRefusal} sockets opened`);
    await page.context().close();
  });

  it('signs out when the stream reconnects with a key revoked meanwhile', async () => {
    const key = await readKey('revoked-soon');
    const { page, sockets } = await newPage(key.secret);
    await page.goto(server.url + '/#/locks');
    await page.waitForSelector('[data-connection=live]', WAIT);
    const revoked = await server.api.delete(`/v1/keys/${key.id}`);
    assert.equal(revoked.status, 200);

    // fleetd restarts: the open socket drops and the page's reconnection meets the revoked key.
    const port = Number(new URL(server.url).port);
    await server.stop({ keepData: true });
    server = await startTestServer({ dataDir: server.dataDir, port });
    await page.waitForSelector('[data-connection=refused]', WAIT);
    assert.match(await page.innerText('[data-testid=refusal]'), /revoked/);
    const afterRefusal = sockets();
    await new Promise((r) => setTimeout(r, 2_500));
    assert.equal(sockets(), afterRefusal, 'no socket opened after the refusal');
    await page.context().close();
  });
});
