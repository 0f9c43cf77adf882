import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import type { PipelineSetup } from '../src/pipelines/pipelines.js';
import { signIn, snap, startWithBrowser } from './browser.js';
import { finishedRun, startPipelineServer } from './fake-llm.js';

/** Approvals on the run page, in a real Chromium against a fleetd running real pipelines. */
const WAIT = { timeout: 20_000 };

const setup: PipelineSetup = {
  functions: { ship: (ctx) => ({ shipped: (ctx.steps.ok as { decision: string }).decision }) },
  pipelines: [
    {
      name: 'release',
      steps: [
        { name: 'ok', kind: 'approval', prompt: 'Ship version {{input.version}} to production?', approvers: { keys: ['lead'] } },
        { name: 'ship', kind: 'code', fn: 'ship' },
      ],
    },
    // Long enough for a page to open and show the countdown before it runs out on a loaded machine
    // (with 3 s, the page once showed the deadline already passed: "0 s ago").
    { name: 'lapse', steps: [{ name: 'ok', kind: 'approval', prompt: 'Anyone?', timeoutMs: 8_000 }] },
  ],
};

describe('dashboard approvals', () => {
  let server: Awaited<ReturnType<typeof startPipelineServer>>;
  let browser: Browser;
  const contexts: BrowserContext[] = [];

  before(async () => {
    [server, browser] = await startWithBrowser(startPipelineServer(setup));
  });
  after(async () => {
    for (const c of contexts) await c.close();
    await browser?.close();
    await server?.stop();
  });

  /** A page in a browser of its own, signed in with a new key of that name and scope. */
  const pageAs = async (name: string, scope: string): Promise<Page> => {
    const key = (await server.api.post('/v1/keys', { name, scope })).body.secret;
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    contexts.push(context);
    const page = await context.newPage();
    await signIn(page, key);
    return page;
  };

  it('shows Approve and Reject to a key that may decide, not to one that may not; an approval given in the page moves the run on', async () => {
    const run = (await server.api.post('/v1/pipelines/release/runs', { input: { version: '2.7' } })).body.run;
    const reader = await pageAs('watcher', 'read');
    const other = await pageAs('someone', 'submit');
    const lead = await pageAs('lead', 'submit');

    for (const page of [reader, other]) {
      await page.goto(`${server.url}/#/pipelines/${run.id}`);
      await page.waitForSelector('[data-approval=ok][data-may-decide=false]', WAIT);
      assert.match(await page.innerText('[data-testid=approval-prompt]'), /Ship version 2\.7 to production\?/);
      assert.equal(await page.locator('[data-decide]').count(), 0, 'no buttons for a key that may not decide');
    }

    await lead.goto(`${server.url}/#/pipelines/${run.id}`);
    await lead.waitForSelector('tr[data-step=ok][data-step-status=waiting]', WAIT);
    await lead.waitForSelector('[data-approval=ok][data-may-decide=true]', WAIT);
    assert.match(await lead.innerText('[data-approval=ok]'), /may be decided by key lead and admin keys/);
    await lead.fill('[data-approval=ok] textarea[name=comment]', 'release notes read');
    await snap(lead, 'approval');
    await lead.click('[data-decide=approve]');
    await lead.waitForSelector('.detail[data-run-status=completed]', WAIT);
    await lead.waitForSelector('[data-approval]', { state: 'detached', ...WAIT });
    const done = await finishedRun(server.api, run.id);
    assert.deepEqual(done.output, { shipped: 'approved' });
    assert.equal(done.steps[0].output.by.name, 'lead');
    assert.equal(done.steps[0].output.comment, 'release notes read');
    // The page that was only watching sees the decision too, without a reload.
    await other.waitForSelector('.detail[data-run-status=completed]', WAIT);
  });

  it('shows the version of an API-defined pipeline a run keeps, and its approval, as for the file\'s', async () => {
    const definition = (prompt: string) => ({ steps: [{ name: 'ok', kind: 'approval', prompt }] });
    await server.api.request('PUT', '/v1/pipelines/defined', definition('first wording'));
    const run = (await server.api.post('/v1/pipelines/defined/runs', {})).body.run;
    await server.api.request('PUT', '/v1/pipelines/defined', definition('second wording'));
    const page = await pageAs('api-ops', 'submit');
    await page.goto(`${server.url}/#/pipelines/${run.id}`);
    await page.waitForSelector('[data-pipeline-version="1"]', WAIT);
    await page.waitForSelector('[data-approval=ok][data-may-decide=true]', WAIT);
    assert.equal(await page.innerText('[data-testid=approval-prompt]'), 'first wording');
    await page.click('[data-decide=reject]');
    await page.waitForSelector('.detail[data-run-status=failed]', WAIT);
  });

  it('shows an approval that nobody decides time out and reject its run, live', async () => {
    const run = (await server.api.post('/v1/pipelines/lapse/runs', {})).body.run;
    const page = await pageAs('ops', 'submit');
    await page.goto(`${server.url}/#/pipelines/${run.id}`);
    await page.waitForSelector('[data-approval=ok][data-may-decide=true]', WAIT);
    assert.match(await page.innerText('[data-approval=ok]'), /decides itself \(rejected\) in \d+ s/);
    await page.waitForSelector('.detail[data-run-status=failed]', WAIT);
    await page.waitForSelector('tr[data-step=ok][data-step-status=failed]', WAIT);
    await page.waitForFunction(() => document.querySelector('[data-testid=run-output]')?.textContent?.includes('"kind": "timeout"'), undefined, WAIT);
    assert.equal(await page.locator('[data-approval]').count(), 0);
  });
});
