import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { signedInPage, startWithBrowser } from './browser.js';
import { eventually, startTestServer, type TestServer } from './helpers.js';

const WAIT = { timeout: 15_000 };
const BURSTS = 5;
const PER_BURST = 10;

/** Each task row on screen, by id: its status as the table shows it. */
function shownStatuses(page: Page): Promise<Record<number, string>> {
  return page.evaluate(() => {
    const shown: Record<number, string> = {};
    for (const row of document.querySelectorAll('[data-task-id]')) {
      shown[Number(row.getAttribute('data-task-id'))] = row.querySelector('[data-status]')!.getAttribute('data-status')!;
    }
    return shown;
  });
}

describe('dashboard task table under a burst', () => {
  let server: TestServer;
  let browser: Browser;
  let page: Page;

  before(async () => {
    // Event batches of a second and up to 1,000 events (the defaults are 50 ms and 50): each task's created, claimed and completed
    // events share a batch however fast or slow this machine is, as they do in production when an
    // agent completes tasks within milliseconds.
    [server, browser] = await startWithBrowser(startTestServer({ eventBatchMs: 1_000, eventBatchMax: 1_000 }));
    // Tall enough that every row of the burst is on screen (the table renders only those).
    page = await signedInPage(browser, server.adminKey, { viewport: { width: 1280, height: 2400 } });
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  it('shows the state the API reports for every task an agent completes within milliseconds', async () => {
    await page.goto(server.url + '/#/tasks');
    await page.waitForSelector('[data-connection=live]', WAIT);
    await page.waitForSelector('text=No tasks match.', WAIT);

    // An agent that completes each task the moment it has it: created, claimed and completed
    // events of one task land in the same batch of the stream, or in consecutive ones.
    const agent = await server.api.registerAgent(['burst']);
    const agentApi = server.api.as(agent.token);
    let stopped = false;
    const work = (async () => {
      while (!stopped) {
        const res = await agentApi.post('/v1/tasks/claim', { agentId: agent.id, max: 50, waitMs: 500 });
        assert.equal(res.status, 200);
        await Promise.all(
          res.body.tasks.map((t: { id: number }) => agentApi.post(`/v1/tasks/${t.id}/complete`, { agentId: agent.id, result: { ok: true } })),
        );
      }
    })();
    try {
      const ids: number[] = [];
      for (let b = 0; b < BURSTS; b++) {
        const tasks = Array.from({ length: PER_BURST }, (_, i) => ({ type: 'burst', payload: { b, i } }));
        const res = await server.api.post('/v1/tasks/batch', { tasks });
        assert.equal(res.status, 201);
        ids.push(...res.body.items.map((i: { task: { id: number } }) => i.task.id));
      }
      await eventually(async () => (await server.api.get('/v1/tasks?status=completed&limit=100')).body.items.length === ids.length, 10_000, 'the API reports every task completed');

      // Live, the page does not poll: what it shows comes from the events alone.
      const expected = Object.fromEntries(ids.map((id) => [id, 'completed']));
      await page
        .waitForFunction(
          (want) => {
            const rows = document.querySelectorAll('[data-task-id]');
            return rows.length === Object.keys(want).length && [...rows].every((r) => r.querySelector('[data-status=completed]'));
          },
          expected,
          WAIT,
        )
        .catch(() => undefined);
      assert.deepEqual(await shownStatuses(page), expected);
    } finally {
      stopped = true;
      await work;
    }
  });
});
