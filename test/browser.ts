import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { DASHBOARD_DIR } from '../src/server/dashboard.js';
import { startTogether } from './helpers.js';

/** Debian's Chromium (`apt-get install -y chromium`); browsers are never downloaded. */
export const CHROMIUM = '/usr/bin/chromium';

export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--no-first-run',
];

/** A headless Chromium; fails with the fix when the browser or the built dashboard is missing. */
export async function launchBrowser(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install -y chromium (.ci/run installs it; docs/testing.md lists what the suite needs)`);
  if (!existsSync(join(DASHBOARD_DIR, 'index.html'))) throw new Error('the dashboard is not built: npm run build');
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
}

/**
 * A server (its start, a promise) and a headless Chromium, started together: when either fails, the
 * other is stopped before the error is thrown (see startTogether). A missing Chromium fails the file
 * rather than leaving its server running and the file's process hanging.
 */
export function startWithBrowser<S extends { stop(): Promise<unknown> }>(server: Promise<S>): Promise<[S, Browser]> {
  return startTogether({ start: server, stop: (s) => s.stop() }, { start: launchBrowser(), stop: (b) => b.close() });
}

/**
 * For a describe block: before its tests, a server (`start`) and a headless Chromium with one page
 * signed in with `key` of that server; after them, both stopped, the browser first. Its fields are
 * set once the block's `before` has run: read them inside the tests. A test that starts the server
 * again sets `server`, so that the new one is stopped.
 */
export function dashboardUnderTest<S extends { stop(): Promise<unknown> }>(
  start: () => Promise<S>,
  options: { key: (server: S) => string | undefined; page?: Parameters<Browser['newPage']>[0] },
): { server: S; readonly browser: Browser; readonly page: Page } {
  const ui = {} as { server: S; browser: Browser; page: Page };
  before(async () => {
    [ui.server, ui.browser] = await startWithBrowser(start());
    ui.page = await signedInPage(ui.browser, options.key(ui.server), options.page);
  });
  after(async () => {
    await ui.browser?.close();
    await ui.server?.stop();
  });
  return ui;
}

/** A new page of the browser (with `options`, a viewport say), signed in with `key` (see signIn). */
export async function signedInPage(browser: Browser, key: string | undefined, options?: Parameters<Browser['newPage']>[0]): Promise<Page> {
  const page = await browser.newPage(options);
  await signIn(page, key);
  return page;
}

/** Signs a page in as a dashboard user would: the API key in this browser's local storage, before any script runs. */
export async function signIn(page: Page, key: string | undefined): Promise<void> {
  if (key) await page.addInitScript((k) => localStorage.setItem('fleetd.apiKey', k), key);
}

/** With FLEETD_SCREENSHOTS=docs, saves the page as docs/dashboard-<name>.png (how docs/dashboard.md's screenshots are made). */
export async function snap(page: Page, name: string): Promise<void> {
  const dir = process.env.FLEETD_SCREENSHOTS;
  if (!dir) return;
  mkdirSync(dir, { recursive: true });
  await page.screenshot({ path: join(dir, `dashboard-${name}.png`) });
}
