import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadPipelinesFile } from '../src/pipelines/load.js';
import type { PipelineSetup } from '../src/pipelines/pipelines.js';
import { dashboardUnderTest, snap } from './browser.js';
import { finishedRun, startPipelineServer } from './fake-llm.js';

/**
 * The pipelines and cases pages in a real Chromium against a fleetd running real pipelines (on
 * the simulated provider, made fast). FLEETD_SCREENSHOTS=docs saves a screenshot of each page.
 */
const WAIT = { timeout: 20_000 };

const example = loadPipelinesFile('examples/complaints/pipelines.yaml');
const setup: PipelineSetup = {
  providers: [
    ...example.providers.map((p) => ({ ...p, latency: { minMs: 1, maxMs: 5 }, failureRate: 0 })),
    { name: 'sim', kind: 'simulated', latency: { minMs: 1, maxMs: 5 } },
  ] as PipelineSetup['providers'],
  pipelines: [
    ...example.pipelines,
    {
      name: 'review',
      steps: [
        { name: 'summary', kind: 'llm', provider: 'sim', prompt: 'Summarise: {{input.text}}' },
        // Waits for an agent: the test decides when the run moves on.
        { name: 'check', kind: 'agent', capability: 'review', payload: { summary: '{{steps.summary}}' } },
        { name: 'verdict', kind: 'code', fn: 'verdict' },
      ],
    },
  ],
  functions: { verdict: (ctx) => ({ verdict: (ctx.steps.check as { ok: boolean }).ok ? 'valid' : 'invalid' }) },
};

describe('dashboard pipelines and cases', () => {
  const ui = dashboardUnderTest(() => startPipelineServer(setup), { key: (s) => s.api.key, page: { viewport: { width: 1280, height: 800 } } });


  /** Set once the page has loaded: still set later means the page was never reloaded. */
  const markLoaded = () => ui.page.evaluate(() => Object.assign(window, { loadedOnce: true }));
  const stillLoadedOnce = () => ui.page.evaluate(() => (window as unknown as { loadedOnce?: boolean }).loadedOnce === true);

  it('shows a run appear and its steps progress live, in the list and on its own page', async () => {
    const { page, server } = ui;
    await page.goto(server.url + '/#/pipelines');
    await page.waitForSelector('[data-connection=live]', WAIT);
    await page.waitForSelector('text=No pipeline runs match.', WAIT);
    await markLoaded();

    const { body } = await server.api.post('/v1/pipelines/review/runs', { input: { text: 'the bins were not collected' } });
    const id = body.run.id;
    const row = page.locator(`tr[data-run-id="${id}"]`);
    // The run waits at its agent step: summary done, check running, verdict pending.
    await row.locator('[data-step=check][data-step-status=running]').waitFor(WAIT);
    assert.equal(await row.locator('[data-step=summary]').getAttribute('data-step-status'), 'completed');
    assert.equal(await row.locator('[data-step=verdict]').getAttribute('data-step-status'), 'pending');
    assert.equal(await row.getAttribute('data-run-status'), 'running');

    await row.locator('a').click();
    await page.waitForSelector(`.detail[data-run-status=running]`, WAIT);
    await page.waitForSelector('tr[data-step=check][data-step-status=running]', WAIT);
    assert.match(await page.innerText('[data-testid=run-input]'), /the bins were not collected/);
    await snap(page, 'run');

    const agent = await server.api.registerAgent(['review']);
    const [task] = await server.api.claim(agent.id, 1, 10_000);
    await server.api.post(`/v1/tasks/${task.id}/complete`, { agentId: agent.id, result: { ok: true } });
    await page.waitForSelector('.detail[data-run-status=completed]', WAIT);
    await page.waitForSelector('tr[data-step=verdict][data-step-status=completed]', WAIT);
    await page.waitForFunction(() => document.querySelector('[data-testid=run-output]')?.textContent?.includes('"verdict": "valid"'), undefined, WAIT);
    await page.click('[data-step-detail=check] summary');
    assert.match(await page.innerText('[data-step-detail=check] pre'), /"ok": true/);

    await page.click('nav >> text=Pipelines');
    await row.locator('[data-step=verdict][data-step-status=completed]').waitFor(WAIT);
    assert.equal(await row.getAttribute('data-run-status'), 'completed');
    assert.ok(await stillLoadedOnce(), 'the page was not reloaded');
  });

  it('filters runs by pipeline and status, and counts runs in flight on the overview', async () => {
    const { page, server } = ui;
    const waiting = (await server.api.post('/v1/pipelines/review/runs', { input: { text: 'a second look' } })).body.run;
    await page.goto(server.url + '/#/');
    await page.waitForFunction(() => document.querySelector('[data-stat=pipeline-runs]')?.textContent === '1', undefined, WAIT);

    await page.goto(server.url + '/#/pipelines?status=running');
    await page.waitForSelector(`tr[data-run-id="${waiting.id}"]`, WAIT);
    const shown = await page.locator('tr[data-run-id]').evaluateAll((rows) => rows.map((r) => Number(r.getAttribute('data-run-id'))));
    assert.deepEqual(shown, [waiting.id]);
    await page.selectOption('select[name=status]', 'completed');
    await page.waitForSelector(`tr[data-run-id="${waiting.id}"]`, { state: 'detached', ...WAIT });
    assert.match(page.url(), /#\/pipelines\?status=completed$/);

    await server.api.post(`/v1/pipelines/runs/${waiting.id}/cancel`);
    await page.goto(server.url + '/#/');
    await page.waitForFunction(() => document.querySelector('[data-stat=pipeline-runs]')?.textContent === '0', undefined, WAIT);
  });

  it('lists the cases complaints are grouped into, and a case with its member runs', async () => {
    const { page, server } = ui;
    await page.goto(server.url + '/#/cases');
    await page.waitForSelector('[data-connection=live]', WAIT);
    const texts = [
      'The bins on Elm Street were not collected for three weeks',
      'Bins on Elm Street not collected for three weeks now',
      'Loud construction noise every night at the harbour after midnight',
    ];
    const started = await server.api.post('/v1/pipelines/complaint/runs/batch', { runs: texts.map((text) => ({ input: { text } })) });
    assert.equal(started.status, 201);
    const runs = [];
    for (const item of started.body.items) runs.push(await finishedRun(server.api, item.run.id));
    const bins = runs[0].output.caseId;
    assert.equal(runs[1].output.caseId, bins);

    // The list updates by itself as the runs finish.
    await page.waitForSelector(`tr[data-case-id="${bins}"] [data-case-size="2"]`, WAIT);
    assert.equal(await page.locator('tr[data-case-id]').count(), 2);
    await snap(page, 'cases');
    await page.click(`tr[data-case-id="${bins}"] a`);
    await page.waitForSelector(`.detail[data-case-id="${bins}"]`, WAIT);
    const members = await page.locator('tr[data-member-run]').evaluateAll((rows) => rows.map((r) => Number(r.getAttribute('data-member-run'))));
    assert.deepEqual(members.sort(), [runs[0].id, runs[1].id].sort());
    assert.match(await page.innerText(`tr[data-member-run="${runs[1].id}"]`), /Bins on Elm Street not collected/);
    await snap(page, 'case');
    await page.click(`tr[data-member-run="${runs[0].id}"] a`);
    await page.waitForSelector('.detail[data-run-status=completed]', WAIT);
    await page.waitForSelector('tr[data-step=group][data-step-status=completed]', WAIT);
    await page.goto(server.url + '/#/pipelines');
    await page.waitForSelector(`tr[data-run-id="${runs[2].id}"] [data-step=group][data-step-status=completed]`, WAIT);
    await snap(page, 'pipelines');
  });
});
