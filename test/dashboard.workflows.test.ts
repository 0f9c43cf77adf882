import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { dashboardUnderTest } from './browser.js';
import { startTestServer } from './helpers.js';

const WAIT = { timeout: 20_000 };

describe('dashboard: waiting tasks, parents and children', () => {
  const ui = dashboardUnderTest(startTestServer, { key: (s) => s.adminKey, page: { viewport: { width: 1280, height: 800 } } });

  it('shows a waiting join with its dependencies, and links a parent to its children and back', async () => {
    const { page, server } = ui;
    const { api } = server;
    const plan = await api.submit({ type: 'plan' });
    const steps = (await api.post('/v1/tasks/batch', { tasks: [1, 2].map((n) => ({ type: 'step', payload: { n }, parentId: plan.id })) })).body.items.map(
      (i: { task: { id: number } }) => i.task.id,
    );
    const join = await api.submit({ type: 'join', parentId: plan.id, dependsOn: steps });

    await page.goto(`${server.url}/#/tasks/${join.id}`);
    await page.waitForSelector('[data-task-status=waiting]', WAIT);
    const deps = await page.textContent('[data-testid=dependencies]');
    assert.match(deps!, /2 tasks, 2 not finished/);
    assert.deepEqual(await page.$$eval('[data-testid=dependencies] a', (as) => as.map((a) => a.textContent)), steps.map(String));
    assert.ok(await page.isVisible('text=Cancel task'), 'a waiting task can be cancelled');

    await page.click(`[data-testid=workflow] a[href="#/tasks/${plan.id}"]`);
    await page.waitForSelector(`text=Task ${plan.id}`, WAIT);
    await page.waitForSelector('[data-testid=children] a', WAIT);
    assert.deepEqual(await page.$$eval('[data-testid=children] a', (as) => as.map((a) => a.textContent)), [...steps, join.id].map(String));

    await page.goto(`${server.url}/#/tasks?status=waiting`);
    await page.waitForSelector(`[data-task-id="${join.id}"]`, WAIT);
    assert.deepEqual(await page.$$eval('[data-task-id]', (rows) => rows.map((r) => r.getAttribute('data-task-id'))), [String(join.id)]);
  });

  it('lists schedules with their next fire, links the last fire\'s task, and pauses and resumes one', async () => {
    const { page, server } = ui;
    const { api } = server;
    assert.equal((await api.post('/v1/schedules', { name: 'hourly-report', cron: '0 * * * *', timezone: 'Europe/Berlin', task: { type: 'report' } })).status, 201);
    assert.equal((await api.post('/v1/schedules', { name: 'ticker', cron: '* * * * * *', task: { type: 'tick' }, overlap: 'allow' })).status, 201);
    await page.goto(`${server.url}/#/schedules`);
    const hourly = '[data-schedule="hourly-report"]';
    await page.waitForSelector(hourly, WAIT);
    const next = (await api.get('/v1/schedules/hourly-report')).body.nextFires[0];
    assert.equal(await page.getAttribute(`${hourly} [data-testid=next-fire]`, 'title'), new Date(next).toLocaleString('en-US'));
    // The ticker fires every second: its row links the task of its last fire.
    await page.waitForSelector('[data-schedule="ticker"] a[href^="#/tasks/"]', WAIT);

    await page.click(`${hourly} button:has-text("Pause")`);
    await page.waitForSelector(`${hourly}[data-paused="true"]`, WAIT);
    assert.equal((await api.get('/v1/schedules/hourly-report')).body.paused, true);
    assert.equal(await page.textContent(`${hourly} [data-testid=next-fire]`), 'paused');
    await page.click(`${hourly} button:has-text("Resume")`);
    await page.waitForSelector(`${hourly}[data-paused="false"]`, WAIT);
    assert.equal((await api.get('/v1/schedules/hourly-report')).body.paused, false);
    await api.post('/v1/schedules/ticker/pause');
  });
});
