import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { dashboardUnderTest, snap } from './browser.js';
import { startTestServer } from './helpers.js';

const WAIT = { timeout: 20_000 };

/** The Types page in a real headless Chromium against a real fleetd: policies, held-back counts and pauses, kept current. */
describe('dashboard: task types', () => {
  const ui = dashboardUnderTest(startTestServer, { key: (s) => s.adminKey, page: { viewport: { width: 1280, height: 800 } } });

  it('shows each type with its policy, what is held back and why, and a pause as it happens', async () => {
    const { page, server } = ui;
    const { api } = server;
    assert.equal((await api.request('PUT', '/v1/types/summarise', { maxConcurrency: 1, rateLimit: { count: 10, perMs: 60000 } })).status, 200);
    const agent = await api.registerAgent(['summarise'], { maxConcurrency: 5 });
    for (let i = 0; i < 4; i++) await api.submit({ type: 'summarise', concurrencyKey: `tenant-${i % 2}` });
    assert.equal((await api.claim(agent.id, 5)).length, 1);

    await page.goto(`${server.url}/#/types`);
    await page.waitForSelector('[data-ready=types]', WAIT);
    const row = page.locator('tr[data-type=summarise]');
    await row.waitFor(WAIT);
    assert.equal(await row.locator('[data-field=policy]').textContent(), '≤ 1 at once, 10 per 60000 ms');
    assert.equal(await row.locator('[data-field=held]').textContent(), '3 by maxConcurrency');

    // A pause made elsewhere shows up without a reload.
    assert.equal((await api.post('/v1/types/summarise/pause', { key: 'tenant-1', reason: 'provider answered 429' })).status, 200);
    await page.waitForFunction(
      () => document.querySelector('tr[data-type=summarise] [data-field=paused]')?.textContent?.includes('key tenant-1 until resumed (provider answered 429)'),
      undefined,
      WAIT,
    );
    await snap(page, 'types');
  });

  it('says why a spent budget holds tasks back: what was spent against the budget, for the type or each key', async () => {
    const { page, server } = ui;
    const { api } = server;
    assert.equal((await api.request('PUT', '/v1/types/translate', { budget: { tokensPerHour: 100, perKey: true } })).status, 200);
    assert.equal((await api.request('PUT', '/v1/types/embed', { budget: { costPerDay: 2 } })).status, 200);
    const agent = await api.registerAgent(['translate', 'embed'], { maxConcurrency: 10 });
    await api.submit({ type: 'translate', concurrencyKey: 'big-spender' });
    await api.submit({ type: 'embed' });
    for (const task of await api.claim(agent.id, 10)) {
      const usage = task.type === 'translate' ? { inputTokens: 90, outputTokens: 20 } : { costUsd: 2.5 };
      assert.equal((await api.post(`/v1/tasks/${task.id}/complete`, { agentId: agent.id, usage })).status, 200);
    }
    await api.submit({ type: 'translate', concurrencyKey: 'big-spender' });
    await api.submit({ type: 'embed' });
    await api.submit({ type: 'embed' });

    await page.goto(`${server.url}/#/types`);
    const translate = page.locator('tr[data-type=translate] [data-field=held]');
    await translate.locator('[data-field=budget]').waitFor(WAIT);
    assert.equal(await translate.locator('[data-field=budget]').textContent(), 'key big-spender spent 110 of 100 tokens in the last hour');
    assert.match((await translate.textContent())!, /^1 by budget/);
    const embed = page.locator('tr[data-type=embed] [data-field=held]');
    // The page may have loaded between the submits: it shows both once it reloads.
    await page.waitForFunction(() => document.querySelector('tr[data-type=embed] [data-field=held]')?.textContent?.startsWith('2 by budget'), undefined, WAIT);
    assert.equal(await embed.locator('[data-field=budget]').textContent(), 'budget spent: $2.5 of $2 in the last day');
    await snap(page, 'types-budget');
  });
});
