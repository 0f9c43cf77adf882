import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { dashboardUnderTest, snap } from './browser.js';
import { startTestServer } from './helpers.js';

/**
 * The dashboard in a real headless Chromium against a real fleetd. Set FLEETD_SCREENSHOTS=docs to
 * save a screenshot of each page (docs/dashboard.md shows them).
 */
const WAIT = { timeout: 20_000 };

describe('dashboard', () => {
  const ui = dashboardUnderTest(startTestServer, { key: (s) => s.adminKey, page: { viewport: { width: 1280, height: 800 } } });

  it('paints the overview loading only the overview chunk, and caches hashed assets for good', async () => {
    const { page, server } = ui;
    const scripts: string[] = [];
    page.on('request', (r) => {
      if (r.resourceType() === 'script') scripts.push(new URL(r.url()).pathname);
    });
    const res = await page.goto(server.url + '/');
    assert.equal(res?.headers()['cache-control'], 'no-store');
    await page.waitForSelector('[data-ready=overview]', WAIT);
    await page.waitForSelector('.overview canvas', WAIT);
    // Updates arrive over the /v1/events WebSocket.
    await page.waitForSelector('[data-connection=live]', WAIT);
    assert.ok(scripts.some((s) => /\/assets\/overview-[\w-]+\.js$/.test(s)), `overview chunk loaded: ${scripts}`);
    assert.ok(!scripts.some((s) => /\/assets\/(tasks|agents|locks|task-detail)-/.test(s)), `no other view loaded: ${scripts}`);
    const asset = await server.api.request('GET', scripts[0]);
    assert.equal(asset.status, 200);
    assert.equal(asset.headers.get('cache-control'), 'public, max-age=31536000, immutable');
    // Serving the dashboard does not turn unknown API paths into pages.
    const missing = await server.api.get('/v1/no-such-thing');
    assert.equal(missing.status, 404);
    assert.equal(missing.body.error.code, 'FLEETD_ERR_NOT_FOUND');
  });

  it('shows an agent as soon as it registers', async () => {
    const { page, server } = ui;
    await page.goto(server.url + '/#/agents');
    await page.waitForSelector('table.data', WAIT);
    const agent = await server.api.registerAgent(['echo', 'gpu'], { name: 'crawler-7' });
    await server.api.post('/v1/locks', { agentId: agent.id, resources: ['repo/README.md'], ttlMs: 60_000 });
    const row = page.locator(`tr[data-agent-id="${agent.id}"]`);
    await row.waitFor(WAIT);
    assert.match(await row.innerText(), /crawler-7\s+echo, gpu\s+online/);
    await page.fill('input[name=q]', 'nobody');
    await row.waitFor({ state: 'detached', ...WAIT });
    await page.fill('input[name=q]', 'crawler');
    await row.waitFor(WAIT);
    await snap(page, 'agents');
    await row.locator('a').click();
    await page.waitForSelector(`text=${agent.id}`, WAIT);
    await page.waitForSelector('text=repo/README.md', WAIT);
    await snap(page, 'agent');
  });

  it('moves a task from queued to completed in the task table', async () => {
    const { page, server } = ui;
    const agent = await server.api.registerAgent(['echo']);
    await page.goto(server.url + '/#/tasks');
    await page.waitForSelector('[data-testid=task-scroller]', WAIT);
    const task = await server.api.submit({ type: 'email.send', payload: { to: 'ops@example.com' }, requires: ['echo'] });
    const status = page.locator(`[data-task-id="${task.id}"] [data-status]`);
    await page.waitForSelector(`[data-task-id="${task.id}"] [data-status=queued]`, WAIT);
    const [claimed] = await server.api.claim(agent.id);
    assert.equal(claimed.id, task.id);
    await server.api.post(`/v1/tasks/${task.id}/complete`, { agentId: agent.id, result: { sent: true } });
    await page.waitForSelector(`[data-task-id="${task.id}"] [data-status=completed]`, WAIT);
    assert.equal(await status.innerText(), 'completed');
    await snap(page, 'tasks');
  });

  it('filters the task table by status and type', async () => {
    const { page, server } = ui;
    const dead = await server.api.submit({ type: 'report.build', maxAttempts: 1, requires: ['reports'] });
    const agent = await server.api.registerAgent(['reports']);
    assert.equal((await server.api.claim(agent.id))[0]?.id, dead.id);
    await server.api.post(`/v1/tasks/${dead.id}/fail`, { agentId: agent.id, error: { message: 'boom' } });
    const queued = await server.api.submit({ type: 'report.build' });
    const other = await server.api.submit({ type: 'image.resize' });

    await page.goto(server.url + '/#/tasks');
    await page.waitForSelector(`[data-task-id="${other.id}"]`, WAIT);
    await page.fill('input[name=type]', 'report.build');
    await page.press('input[name=type]', 'Enter');
    await page.waitForSelector(`[data-task-id="${other.id}"]`, { state: 'detached', ...WAIT });
    await page.waitForSelector(`[data-task-id="${queued.id}"]`, WAIT);
    await page.selectOption('select[name=status]', 'dead');
    await page.waitForSelector(`[data-task-id="${queued.id}"]`, { state: 'detached', ...WAIT });
    await page.waitForSelector(`[data-task-id="${dead.id}"] [data-status=dead]`, WAIT);
    const ids = await page.locator('[data-task-id]').evaluateAll((rows) => rows.map((r) => Number(r.getAttribute('data-task-id'))));
    assert.deepEqual(ids, [dead.id]);
    // The filters are in the address, so a reload (or a shared link) shows the same rows.
    assert.match(page.url(), /#\/tasks\?status=dead&type=report\.build$/);
  });

  it('scrolls through more tasks than one page, rendering only the rows on screen', async () => {
    const { page, server } = ui;
    const tasks = Array.from({ length: 1_200 }, (_, i) => ({ type: 'bulk.item', payload: { i } }));
    const { items } = (await server.api.post('/v1/tasks/batch', { tasks })).body;
    const oldest = items[0].task.id;
    // A fresh load of a shared link (changing the filter in place while creations stream in is
    // test/dashboard.task-filter.test.ts).
    await page.goto('about:blank');
    await page.goto(server.url + '/#/tasks?type=bulk.item');
    await page.waitForSelector(`[data-task-id="${items.at(-1).task.id}"]`, WAIT);
    const scroller = page.locator('[data-testid=task-scroller]');
    // Pages of 500 are fetched by cursor as the end comes near, until the oldest task is on screen.
    await page.waitForFunction(
      (id) => {
        const el = document.querySelector('[data-testid=task-scroller]')!;
        el.scrollTop = el.scrollHeight;
        return document.querySelector(`[data-task-id="${id}"]`) !== null;
      },
      oldest,
      { ...WAIT, polling: 100 },
    );
    assert.equal(await page.getAttribute('[data-loaded]', 'data-loaded'), '1200');
    const rendered = await scroller.locator('[data-task-id]').count();
    assert.ok(rendered < 100, `${rendered} rows in the DOM for 1,200 loaded`);
  });

  it('opens a task, cancels it with a reason, and retries it', async () => {
    const { page, server } = ui;
    const task = await server.api.submit({
      type: 'crawl.page',
      payload: { url: 'https://example.com/a' },
      priority: 5,
      tags: ['campaign:spring', 'retry-me'],
      metadata: { requestedBy: 'ana' },
      executionTimeoutMs: 90_000,
    });
    await page.goto(server.url + '/#/tasks');
    await page.click(`[data-task-id="${task.id}"]`, WAIT);
    await page.waitForSelector('.detail [data-status=queued]', WAIT);
    assert.match(await page.innerText('[data-testid=payload]'), /"url": "https:\/\/example.com\/a"/);
    assert.deepEqual(await page.locator('[data-testid=tags] .tag').allInnerTexts(), ['campaign:spring', 'retry-me']);
    assert.match(await page.innerText('[data-testid=metadata]'), /"requestedBy": "ana"/);
    assert.match(await page.innerText('[data-testid=timeouts]'), /runs at most 90000 ms/);
    await snap(page, 'task');

    await page.fill('input[name=cancelReason]', 'campaign stopped');
    await page.click('text=Cancel task');
    await page.waitForSelector('.detail[data-task-status=cancelled]', WAIT);
    const cancelled = (await server.api.get(`/v1/tasks/${task.id}`)).body;
    assert.equal(cancelled.status, 'cancelled');
    assert.deepEqual(cancelled.error, { code: 'FLEETD_ERR_CANCELLED', message: 'campaign stopped' });
    assert.match(await page.innerText('[data-testid=error]'), /campaign stopped/);

    await page.click('text=Retry task');
    await page.waitForSelector('.detail[data-task-status=queued]', WAIT);
    assert.equal((await server.api.get(`/v1/tasks/${task.id}`)).body.status, 'queued');
  });

  it('lists the locks agents hold', async () => {
    const { page, server } = ui;
    const agent = await server.api.registerAgent([]);
    const lock = await server.api.post('/v1/locks', { agentId: agent.id, resources: ['src/app.ts', 'src/db.ts'], ttlMs: 60_000, description: 'refactor' });
    await page.goto(server.url + '/#/locks');
    const row = page.locator(`tr[data-lock-id="${lock.body.id}"]`);
    await row.waitFor(WAIT);
    assert.match(await row.innerText(), /src\/app\.ts, src\/db\.ts\s+\S+\s+refactor/);
    await snap(page, 'locks');
  });

  it('updates the overview counts live and says when fleetd is unreachable', async () => {
    const { page } = ui;
    await ui.server.api.submit({ type: 'overview.check' });
    await page.goto(ui.server.url + '/');
    await page.waitForSelector('[data-ready=overview]', WAIT);
    const before = Number((await page.innerText('[data-stat=tasks-queued]')).replace(/\D/g, ''));
    await ui.server.api.submit({ type: 'overview.check' });
    await page.waitForFunction((n) => Number(document.querySelector('[data-stat=tasks-queued]')!.textContent!.replace(/\D/g, '')) === n, before + 1, WAIT);
    await snap(page, 'overview');

    // fleetd goes away: the page says so, then reconnects by itself when it is back.
    const port = Number(new URL(ui.server.url).port);
    await ui.server.stop({ keepData: true });
    await page.waitForSelector('[data-connection=offline]', WAIT);
    ui.server = await startTestServer({ dataDir: ui.server.dataDir, port });
    await page.waitForSelector('[data-connection=live]', { timeout: 30_000 });
    await ui.server.api.submit({ type: 'overview.check' });
    await page.waitForFunction((n) => Number(document.querySelector('[data-stat=tasks-queued]')!.textContent!.replace(/\D/g, '')) === n, before + 2, WAIT);
  });
});
