import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { dashboardUnderTest, signIn } from './browser.js';
import { eventually, startTestServer } from './helpers.js';

const WAIT = { timeout: 10_000 };

describe('dashboard: agents by name, tasks no agent can take, a narrow window', () => {
  const ui = dashboardUnderTest(startTestServer, { key: (s) => s.adminKey, page: { viewport: { width: 1280, height: 900 } } });

  it('names agents wherever they appear, with the id on hover', async () => {
    const { page, server } = ui;
    const renderer = await server.api.post('/v1/agents', { name: 'render-farm-7', capabilities: ['video.render'] });
    const agent = renderer.body.agent;
    const task = await server.api.submit({ type: 'video.render' });
    await server.api.claim(agent.id);
    const lock = await server.api.post('/v1/locks', { agentId: agent.id, resources: ['clips/intro.mp4'], ttlMs: 60_000 });
    assert.equal(lock.status, 200, JSON.stringify(lock.body));

    for (const [address, where] of [
      ['/#/tasks', `[data-task-id="${task.id}"] [data-agent-ref]`],
      [`/#/tasks/${task.id}`, '[data-agent-ref]'],
      ['/#/locks', '[data-agent-ref]'],
    ]) {
      await page.goto(server.url + address);
      const ref = page.locator(where).first();
      await page.waitForFunction((sel) => document.querySelector(sel)?.textContent === 'render-farm-7', where, WAIT);
      assert.equal(await ref.getAttribute('title'), agent.id, `the id on hover at ${address}`);
    }
  });

  it('flags queued tasks that no online agent can take, on the task pages and the overview', async () => {
    const { page, server } = ui;
    await server.api.registerAgent(['email.send']);
    const stuck = await server.api.submit({ type: 'gpu.train', requires: ['gpu', 'cuda'] });
    const fine = await server.api.submit({ type: 'email.send' });

    await page.goto(server.url + '/#/tasks');
    await page.waitForSelector(`[data-task-id="${stuck.id}"] [data-flag=no-capable-agent]`, WAIT);
    assert.equal(await page.locator(`[data-task-id="${fine.id}"] [data-flag]`).count(), 0);

    await page.goto(server.url + `/#/tasks/${stuck.id}`);
    await page.waitForSelector('[data-flag=no-capable-agent]', WAIT);

    await page.goto(server.url + '/#/');
    await page.waitForSelector('tr:has(a[href="#/tasks?type=gpu.train"]) [data-flag=no-capable-agent]', WAIT);
    assert.equal(await page.locator('tr:has(a[href="#/tasks?type=email.send"]) [data-flag]').count(), 0);

    // An agent that can take it comes online: the flag goes.
    await server.api.registerAgent(['gpu', 'cuda']);
    await page.waitForSelector('tr:has(a[href="#/tasks?type=gpu.train"]) [data-flag=no-capable-agent]', { state: 'detached', ...WAIT });
  });

  it('shows a change made while the page was still subscribing to its topics', async () => {
    const { server, browser } = ui;
    await server.api.submit({ type: 'render.still', requires: ['render.still'] });
    const fresh = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    try {
      await signIn(fresh, server.adminKey);
      // The page's subscriptions reach fleetd only when the test lets them: a change made before
      // then sends the page no event.
      const held: (string | Buffer)[] = [];
      let release: (() => void) | undefined;
      await fresh.routeWebSocket(/\/v1\/events/, (socket) => {
        const fleetd = socket.connectToServer();
        let holding = true;
        socket.onMessage((message) => (holding && String(message).includes('"subscribe"') ? held.push(message) : fleetd.send(message)));
        release = () => {
          holding = false;
          for (const message of held.splice(0)) fleetd.send(message);
        };
      });
      await fresh.goto(server.url + '/#/');
      const flag = 'tr:has(a[href="#/tasks?type=render.still"]) [data-flag=no-capable-agent]';
      await fresh.waitForSelector(flag, WAIT);
      // The flag comes from the page's first reads; its socket may ask for topics only after them.
      await eventually(() => held.length > 0, WAIT.timeout, 'the page to ask for its topics');
      await server.api.registerAgent(['render.still']);
      release!();
      await fresh.waitForSelector(flag, { state: 'detached', ...WAIT });
    } finally {
      await fresh.close();
    }
  });

  it('draws the overview\'s charts over their whole 5-minute window from the first second', async () => {
    const { server, browser } = ui;
    const fresh = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    try {
      await signIn(fresh, server.adminKey);
      await fresh.goto(server.url + '/#/');
      await fresh.waitForSelector('[data-ready=overview]', WAIT);
      await fresh.waitForFunction(() => document.querySelectorAll('[data-x-span-seconds]').length === 3, undefined, WAIT);
      const spans = await fresh.locator('[data-x-span-seconds]').evaluateAll((els) => els.map((e) => e.getAttribute('data-x-span-seconds')));
      assert.deepEqual(spans, ['300', '300', '300']);
    } finally {
      await fresh.close();
    }
  });

  it('keeps navigation and the task table usable in a 420 px window', async () => {
    const { server, browser } = ui;
    const narrow = await browser.newPage({ viewport: { width: 420, height: 800 } });
    try {
      await signIn(narrow, server.adminKey);
      await narrow.goto(server.url + '/#/tasks');
      await narrow.waitForSelector('[data-task-id]', WAIT);
      // Nothing sticks out sideways: the page itself never scrolls horizontally.
      assert.ok(await narrow.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth));
      // Every section of the navigation can be reached, and reaches its view.
      const links = await narrow.locator('nav a').all();
      assert.ok(links.length >= 5);
      for (const link of links) {
        await link.scrollIntoViewIfNeeded();
        assert.ok(await link.isVisible(), `${await link.innerText()} is visible`);
      }
      await narrow.locator('nav a[href="#/locks"]').click();
      await narrow.waitForURL(/#\/locks$/, WAIT);
      await narrow.locator('nav a[href="#/tasks"]').click();
      // The columns that tell tasks apart are on screen, each wide enough to read.
      const row = narrow.locator('[data-task-id]').first();
      await row.waitFor(WAIT);
      const widths = await row.evaluate((r) => [...r.children].map((c) => (c as HTMLElement).getBoundingClientRect()));
      const visible = widths.filter((b) => b.width > 0);
      assert.equal(visible.length, 5, 'id, type, status, agent and age');
      for (const box of visible) {
        assert.ok(box.width >= 40, `a column ${box.width} px wide`);
        assert.ok(box.right <= 420, 'inside the window');
      }
    } finally {
      await narrow.close();
    }
  });
});
