import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { signIn, startWithBrowser } from './browser.js';
import { startTestServer, type TestServer } from './helpers.js';

const WAIT = { timeout: 20_000 };

/** The dashboard against a fleetd whose tasks and agents live in two namespaces, team-a and team-b. */
describe('dashboard namespaces', () => {
  let server: TestServer;
  let browser: Browser;
  let teamBKey: string;
  const tasks: Record<'team-a' | 'team-b', number[]> = { 'team-a': [], 'team-b': [] };
  const agents: Record<'team-a' | 'team-b', string> = { 'team-a': '', 'team-b': '' };

  before(async () => {
    [server, browser] = await startWithBrowser(startTestServer());
    // A namespace is known (listed by GET /v1/namespaces) once a key is scoped to it.
    for (const ns of ['team-a', 'team-b'] as const) {
      const key = await server.api.post('/v1/keys', { name: `${ns} watcher`, scope: 'read', namespaces: [ns] });
      assert.equal(key.status, 201);
      if (ns === 'team-b') teamBKey = key.body.secret;
      for (const type of ['build', 'deploy']) tasks[ns].push((await server.api.submit({ type: `${ns}.${type}`, namespace: ns })).id);
      agents[ns] = (await server.api.registerAgent([`${ns}.build`], { name: `${ns}-agent`, namespace: ns })).id;
    }
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  /** A page in a context of its own (its own local storage), noting the Fleetd-Namespace of its API requests and its event sockets. */
  async function newPage(key: string): Promise<{ page: Page; namespaceHeaders: (string | undefined)[]; sockets: string[] }> {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page = await context.newPage();
    await signIn(page, key);
    const namespaceHeaders: (string | undefined)[] = [];
    const sockets: string[] = [];
    page.on('request', (r) => {
      if (new URL(r.url()).pathname === '/v1/tasks') namespaceHeaders.push(r.headers()['fleetd-namespace']);
    });
    page.on('websocket', (ws) => {
      if (ws.url().includes('/v1/events')) sockets.push(ws.url());
    });
    return { page, namespaceHeaders, sockets };
  }

  const shownTasks = (page: Page) => page.$$eval('[data-task-id]', (rows) => rows.map((r) => Number(r.getAttribute('data-task-id'))).sort((a, b) => a - b));
  const shownAgents = (page: Page) => page.$$eval('[data-agent-id]', (rows) => rows.map((r) => r.getAttribute('data-agent-id')).sort());
  const waitForTasks = (page: Page, ids: number[]) =>
    page.waitForFunction(
      (want) => JSON.stringify([...document.querySelectorAll('[data-task-id]')].map((r) => Number(r.getAttribute('data-task-id'))).sort((a, b) => a - b)) === want,
      JSON.stringify([...ids].sort((a, b) => a - b)),
      WAIT,
    );
  const headerCells = (page: Page, selector: string) => page.$$eval(selector, (cells) => cells.map((c) => c.textContent));

  it('lets a key of every namespace pick one: the views, their requests and the live stream keep to it', async () => {
    const { page, namespaceHeaders, sockets } = await newPage(server.adminKey!);
    await page.goto(server.url + '/#/tasks');
    await page.waitForSelector('[data-connection=live]', WAIT);
    await page.waitForSelector('[data-testid=namespace-picker]', WAIT);
    const options = await page.$$eval('[data-testid=namespace-picker] option', (os) => os.map((o) => [(o as HTMLOptionElement).value, o.textContent]));
    assert.deepEqual(options[0], ['', 'all namespaces']);
    assert.ok(['team-a', 'team-b'].every((ns) => options.some(([value]) => value === ns)), JSON.stringify(options));

    // All namespaces: every task, each saying which namespace it is in.
    await waitForTasks(page, [...tasks['team-a'], ...tasks['team-b']]);
    assert.ok((await headerCells(page, '.vhead span')).includes('namespace'));
    assert.equal(await page.getAttribute(`[data-task-id="${tasks['team-b'][0]}"] [data-namespace]`, 'data-namespace'), 'team-b');
    assert.equal(namespaceHeaders.at(-1), undefined);

    await page.selectOption('[data-testid=namespace-picker]', 'team-a');
    await waitForTasks(page, tasks['team-a']);
    assert.ok(!(await headerCells(page, '.vhead span')).includes('namespace'), 'one namespace shown: no column');
    assert.equal(await page.evaluate(() => localStorage.getItem('fleetd.namespace')), 'team-a');
    assert.equal(namespaceHeaders.at(-1), 'team-a');
    await page.waitForSelector('[data-connection=live]', WAIT);
    assert.match(sockets.at(-1)!, /[?&]namespace=team-a(&|$)/);

    // Live: team-b's new task never reaches the page; team-a's, submitted after it, does.
    const otherNew = await server.api.submit({ type: 'team-b.build', namespace: 'team-b' });
    const ownNew = await server.api.submit({ type: 'team-a.build', namespace: 'team-a' });
    await page.waitForSelector(`[data-task-id="${ownNew.id}"]`, WAIT);
    tasks['team-a'].push(ownNew.id);
    tasks['team-b'].push(otherNew.id);
    assert.deepEqual(await shownTasks(page), [...tasks['team-a']].sort((a, b) => a - b));
    const socketsBefore = sockets.length;

    // The choice outlives a reload, and holds on the other views.
    await page.reload();
    await page.waitForSelector('[data-connection=live]', WAIT);
    assert.equal(await page.inputValue('[data-testid=namespace-picker]'), 'team-a');
    await waitForTasks(page, tasks['team-a']);
    assert.match(sockets.at(-1)!, /[?&]namespace=team-a(&|$)/);
    assert.ok(sockets.length > socketsBefore);
    await page.goto(server.url + '/#/agents');
    await page.waitForSelector(`[data-agent-id="${agents['team-a']}"]`, WAIT);
    assert.deepEqual(await shownAgents(page), [agents['team-a']]);
    assert.ok(!(await headerCells(page, 'table.data th')).includes('namespace'));
    await page.goto(`${server.url}/#/tasks/${tasks['team-a'][0]}`);
    await page.waitForSelector('.detail [data-testid=namespace]', WAIT);
    assert.equal(await page.innerText('.detail [data-testid=namespace]'), 'team-a');

    // Back to all namespaces: the agents of both, with the column.
    await page.goto(server.url + '/#/agents');
    await page.selectOption('[data-testid=namespace-picker]', '');
    await page.waitForSelector(`[data-agent-id="${agents['team-b']}"]`, WAIT);
    assert.ok((await headerCells(page, 'table.data th')).includes('namespace'));
    assert.equal(await page.innerText(`[data-agent-id="${agents['team-b']}"] [data-namespace]`), 'team-b');
    assert.equal(await page.evaluate(() => localStorage.getItem('fleetd.namespace')), null);
    await page.context().close();
  });

  it("shows a type of one name in two namespaces as two rows, each with its namespace's own policy", async () => {
    for (const ns of ['team-a', 'team-b'] as const) tasks[ns].push((await server.api.submit({ type: 'shared', namespace: ns })).id);
    assert.equal((await server.api.put('/v1/types/shared?namespace=team-a', { maxConcurrency: 3 })).status, 200);
    const { page } = await newPage(server.adminKey!);
    await page.goto(server.url + '/#/types');
    await page.waitForFunction(() => document.querySelectorAll('tr[data-type="shared"]').length === 2, undefined, WAIT);
    assert.ok((await headerCells(page, 'table.data th')).includes('namespace'));
    assert.equal(await page.innerText('tr[data-type="shared"][data-namespace="team-a"] [data-field=policy]'), '≤ 3 at once');
    assert.equal(await page.innerText('tr[data-type="shared"][data-namespace="team-b"] [data-field=policy]'), 'no limits');
    // In team-b alone: team-b's row, without the column.
    await page.selectOption('[data-testid=namespace-picker]', 'team-b');
    await page.waitForFunction(() => document.querySelectorAll('tr[data-type="shared"]').length === 1 && document.querySelector('tr[data-type="shared"][data-namespace="team-b"]'), undefined, WAIT);
    assert.ok(!(await headerCells(page, 'table.data th')).includes('namespace'));
    await page.context().close();
  });

  it('shows a key of team-b alone no picker, and only team-b', async () => {
    const { page, namespaceHeaders } = await newPage(teamBKey);
    // A namespace picked in this browser before, out of this key's reach, is let go.
    await page.addInitScript(() => {
      if (!sessionStorage.getItem('seeded')) {
        sessionStorage.setItem('seeded', '1');
        localStorage.setItem('fleetd.namespace', 'team-a');
      }
    });
    await page.goto(server.url + '/#/tasks');
    await page.waitForSelector('[data-connection=live]', WAIT);
    await waitForTasks(page, tasks['team-b']);
    assert.equal(await page.evaluate(() => localStorage.getItem('fleetd.namespace')), null);
    assert.equal(await page.$('[data-testid=namespace-picker]'), null, 'no picker');
    assert.ok(!(await headerCells(page, '.vhead span')).includes('namespace'));
    assert.equal(namespaceHeaders.at(-1), undefined);

    const otherNew = await server.api.submit({ type: 'team-a.build', namespace: 'team-a' });
    const ownNew = await server.api.submit({ type: 'team-b.build', namespace: 'team-b' });
    await page.waitForSelector(`[data-task-id="${ownNew.id}"]`, WAIT);
    assert.equal(await page.$(`[data-task-id="${otherNew.id}"]`), null);
    tasks['team-b'].push(ownNew.id);

    await page.goto(server.url + '/#/agents');
    await page.waitForSelector(`[data-agent-id="${agents['team-b']}"]`, WAIT);
    assert.deepEqual(await shownAgents(page), [agents['team-b']]);
    assert.ok(!(await headerCells(page, 'table.data th')).includes('namespace'));
    await page.goto(`${server.url}/#/agents/${agents['team-b']}`);
    await page.waitForSelector('.detail [data-testid=namespace]', WAIT);
    assert.equal(await page.innerText('.detail [data-testid=namespace]'), 'team-b');
    assert.equal(await page.$('[data-testid=namespace-picker]'), null);
    await page.context().close();
  });
});
