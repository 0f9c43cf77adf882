import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { signIn, startWithBrowser } from './browser.js';
import { startTestServer, type TestServer } from './helpers.js';

const WAIT = { timeout: 20_000 };

/** The directives of a Content-Security-Policy header, by name. */
function directives(header: string | null): Map<string, string[]> {
  assert.ok(header, 'a Content-Security-Policy header');
  return new Map(
    header
      .split(';')
      .map((d) => d.trim().split(/\s+/))
      .filter((parts) => parts[0] !== '')
      .map(([name, ...values]) => [name, values]),
  );
}

describe('security headers', () => {
  let server: TestServer;
  let browser: Browser;

  before(async () => {
    [server, browser] = await startWithBrowser(startTestServer());
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  it('sends a strict policy, no framing, nosniff and a referrer policy on the dashboard and the API', async () => {
    const page = await fetch(`${server.url}/`);
    assert.equal(page.status, 200);
    const html = await page.text();
    const asset = /src="(\/assets\/[^"]+\.js)"/.exec(html)?.[1];
    assert.ok(asset, 'the dashboard page names its entry script');
    const noFramingNoSniffNoReferrer = (res: { headers: Headers }) => {
      assert.deepEqual(directives(res.headers.get('content-security-policy')).get('frame-ancestors'), ["'none'"]);
      assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
      assert.equal(res.headers.get('x-frame-options'), 'DENY');
      assert.equal(res.headers.get('referrer-policy'), 'no-referrer');
      // Plain HTTP: no HSTS (it belongs to whoever terminates TLS).
      assert.equal(res.headers.get('strict-transport-security'), null);
    };
    for (const res of [page, await fetch(server.url + asset)]) {
      noFramingNoSniffNoReferrer(res);
      const csp = directives(res.headers.get('content-security-policy'));
      assert.deepEqual(csp.get('object-src'), ["'none'"]);
      assert.deepEqual(csp.get('script-src-attr'), ["'none'"]);
      const scripts = csp.get('script-src') ?? [];
      assert.ok(scripts.includes("'self'"));
      for (const forbidden of ["'unsafe-inline'", "'unsafe-eval'", '*', 'https:', 'http:']) assert.ok(!scripts.includes(forbidden), `script-src has no ${forbidden}`);
    }
    // The API's answers are never rendered: a browser that opens one may run and load nothing at all.
    for (const res of [await server.api.get('/v1/stats'), await server.api.as(undefined).get('/v1/tasks')]) {
      noFramingNoSniffNoReferrer(res);
      assert.deepEqual([...directives(res.headers.get('content-security-policy'))], [
        ['default-src', ["'none'"]],
        ['frame-ancestors', ["'none'"]],
      ]);
    }
    // The task stream writes its own head (its reply is hijacked), with the same headers.
    const task = await server.api.submit({ type: 'streamed' });
    const streaming = new AbortController();
    try {
      const stream = await fetch(`${server.url}/v1/tasks/${task.id}/stream`, { headers: { authorization: `Bearer ${server.api.key}` }, signal: streaming.signal });
      assert.equal(stream.headers.get('content-type'), 'text/event-stream; charset=utf-8');
      noFramingNoSniffNoReferrer(stream);
    } finally {
      streaming.abort();
    }
  });

  it('answers the secrets of a new key with Cache-Control: no-store', async () => {
    const res = await server.api.post('/v1/keys', { name: 'cached?', scope: 'read' });
    assert.equal(res.status, 201);
    assert.match(res.body.secret, /^fk_/);
    assert.equal(res.headers.get('cache-control'), 'no-store');
  });

  /** A page that records every policy violation and script error it meets. */
  async function watchedPage(key?: string): Promise<{ page: Page; violations: string[] }> {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page = await context.newPage();
    await signIn(page, key);
    const violations: string[] = [];
    await page.exposeFunction('reportViolation', (v: string) => violations.push(v));
    await page.addInitScript(() => {
      document.addEventListener('securitypolicyviolation', (e) => {
        (window as unknown as { reportViolation(v: string): void }).reportViolation(`${e.violatedDirective} ${e.blockedURI}`);
      });
    });
    page.on('pageerror', (err) => violations.push(`page error: ${err.message}`));
    return { page, violations };
  }

  it('runs the built dashboard under the policy with no violation, and blocks an injected inline script', async () => {
    const { page, violations } = await watchedPage(server.adminKey);
    try {
      await page.goto(server.url + '/');
      await page.waitForSelector('[data-ready=overview]', WAIT);
      await page.waitForSelector('[data-connection=live]', WAIT);
      // A page with charts, and one with a task's detail (payload shown as text).
      await page.waitForSelector('.overview canvas', WAIT);
      const task = await server.api.submit({ type: 'csp.check', payload: { url: 'https://example.com/csp' } });
      await page.goto(`${server.url}/#/tasks/${task.id}`);
      await page.waitForSelector('.detail [data-status=queued]', WAIT);
      assert.match(await page.innerText('[data-testid=payload]'), /example.com\/csp/);
      assert.equal(violations.length, 0, violations.join(", "));

      // What an injected <script> would do: the policy stops it and reports it.
      const ran = await page.evaluate(async () => {
        const s = document.createElement('script');
        s.textContent = 'window.injected = true';
        document.body.appendChild(s);
        await new Promise((r) => setTimeout(r, 100));
        return (window as unknown as { injected?: boolean }).injected === true;
      });
      assert.equal(ran, false);
      assert.ok(violations.some((v) => v.startsWith('script-src')), `a script-src violation was reported: ${violations.join(', ')}`);
    } finally {
      await page.context().close();
    }
  });

  it('serves the API reference at /docs with its scripts as strict, and no violation', async () => {
    const { page, violations } = await watchedPage();
    try {
      const res = await page.goto(`${server.url}/docs/`);
      const csp = directives((await res!.allHeaders())['content-security-policy']);
      assert.deepEqual(csp.get('frame-ancestors'), ["'none'"]);
      assert.ok(!csp.get('script-src')!.includes("'unsafe-inline'"));
      await page.waitForSelector('.swagger-ui .info .title', WAIT);
      assert.match(await page.innerText('.swagger-ui .info .title'), /fleetd/);
      assert.equal(violations.length, 0, violations.join(", "));
    } finally {
      await page.context().close();
    }
  });
});
