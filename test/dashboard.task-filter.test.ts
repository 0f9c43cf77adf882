import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Page, Request } from 'playwright-core';
import { dashboardUnderTest } from './browser.js';
import { eventually, startTestServer } from './helpers.js';

const WAIT = { timeout: 20_000 };

/**
 * Every task id the virtual table holds, top to bottom: it renders only the rows on screen, so the
 * page scrolls through it (loading further pages as it goes) and reads the ids at each step.
 */
function readTableIds(page: Page): Promise<number[]> {
  // No named inner functions: tsx would wrap them in a helper that does not exist in the page.
  return page.evaluate(async () => {
    const scroller = document.querySelector<HTMLElement>('[data-testid=task-scroller]')!;
    const ids = new Set<number>();
    scroller.scrollTop = 0;
    for (let stalled = 0; stalled < 50; ) {
      await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
      for (const row of scroller.querySelectorAll('[data-task-id]')) ids.add(Number(row.getAttribute('data-task-id')));
      const before = scroller.scrollTop;
      scroller.scrollTop = before + scroller.clientHeight / 2;
      if (scroller.scrollTop !== before) continue;
      // At the bottom: wait for a page still loading rather than stop.
      if (!scroller.querySelector('.loading-more')) break;
      stalled++;
      await new Promise((r) => setTimeout(r, 100));
    }
    scroller.scrollTop = 0;
    return [...ids];
  });
}

describe('dashboard task table', () => {
  const ui = dashboardUnderTest(startTestServer, { key: (s) => s.adminKey, page: { viewport: { width: 1280, height: 800 } } });

  it('shows exactly the rows of the new filter when it changes while 1,200 creations stream in', async () => {
    const { page, server } = ui;
    // A slow link: each page of the table reaches fleetd 600 ms after it was asked for, and events
    // reach the page 300 ms after fleetd sent them. So while a page is on its way, events arrive
    // for tasks older than the newest the page will hold, and events for tasks it holds arrive
    // after it: the table has to place both right.
    let lastTraffic = Date.now();
    let inFlight = 0;
    await page.route(/\/v1\/tasks\?/, async (route) => {
      inFlight++;
      await new Promise((r) => setTimeout(r, 600));
      // The page may have given up on the request meanwhile (its filter changed).
      await route.continue().catch(() => {});
    });
    const settled = (request: Request) => {
      if (!/\/v1\/tasks\?/.test(request.url())) return;
      inFlight--;
      lastTraffic = Date.now();
    };
    page.on('requestfinished', settled);
    page.on('requestfailed', settled);
    await page.routeWebSocket(/\/v1\/events/, (socket) => {
      const fleetd = socket.connectToServer();
      fleetd.onMessage((message) => {
        inFlight++;
        setTimeout(() => {
          socket.send(message);
          inFlight--;
          lastTraffic = Date.now();
        }, 300);
      });
    });
    await page.goto(server.url + '/#/tasks');
    await page.waitForSelector('[data-connection=live]', WAIT);
    await page.waitForSelector('text=No tasks match.', WAIT);

    // 1,200 tasks of two types in 48 batches, paced, so that their task.created events stream in
    // while the filter changes twice under them.
    let posted = 0;
    const stream = (async () => {
      for (let b = 0; b < 48; b++) {
        const tasks = Array.from({ length: 25 }, (_, i) => ({ type: (b * 25 + i) % 2 ? 'race.b' : 'race.a', payload: { b, i } }));
        const res = await server.api.post('/v1/tasks/batch', { tasks });
        assert.equal(res.status, 201);
        posted++;
        await new Promise((r) => setTimeout(r, 40));
      }
    })();
    await eventually(() => posted >= 12, 20_000, 'a quarter of the tasks');
    await page.fill('input[name=type]', 'race.a');
    await page.press('input[name=type]', 'Enter');
    await eventually(() => posted >= 24, 20_000, 'half of the tasks');
    await page.fill('input[name=type]', 'race.b');
    await page.press('input[name=type]', 'Enter');
    await stream;

    const expected: number[] = (await server.api.get('/v1/tasks?type=race.b&limit=1000')).body.items.map((t: { id: number }) => t.id);
    assert.equal(expected.length, 600);
    // Once every page and event has arrived, the table is read once: reading it scrolls it, and
    // scrolling back to the top reloads it when new rows were counted, which would hide a wrong
    // state rather than show it.
    await eventually(() => inFlight === 0 && Date.now() - lastTraffic > 1_500, 20_000, 'pages and events to stop arriving');
    const shown = await readTableIds(page);
    const extra = shown.filter((id) => !expected.includes(id));
    const missing = expected.filter((id) => !shown.includes(id));
    const misplaced = shown.findIndex((id, i) => id !== expected[i]);
    assert.deepEqual(
      shown,
      expected,
      `${shown.length} rows shown, ${extra.length} not of the filter, ${missing.length} missing, ` +
        `row ${misplaced} is ${shown[misplaced]} where the API has ${expected[misplaced]}`,
    );
    assert.match(page.url(), /#\/tasks\?type=race\.b$/);
  });
});
