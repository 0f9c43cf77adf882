import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Browser, Page, WebSocketRoute } from 'playwright-core';
import { signedInPage, startWithBrowser } from './browser.js';
import { eventually, startTestServer, type TestServer } from './helpers.js';

/**
 * The dashboard's side of the /v1/events contract (subscribe to topics; batched
 * {"type":"events","events":[{topic,name,data,at}]}). The socket is answered inside the browser by
 * Playwright's WebSocket routing, so that the test decides what arrives and when (and can drop the
 * socket); it answers subscriptions as fleetd's gateway does, and the data pushed is what the real
 * fleetd returns for the same tasks.
 */
const WAIT = { timeout: 10_000 };

describe('dashboard on the live event stream', () => {
  let server: TestServer;
  let browser: Browser;
  let page: Page;
  const sockets: WebSocketRoute[] = [];
  const subscribed: string[][] = [];

  before(async () => {
    [server, browser] = await startWithBrowser(startTestServer());
    page = await signedInPage(browser, server.adminKey);
    await page.routeWebSocket(/\/v1\/events(\?|$)/, (ws) => {
      sockets.push(ws);
      const topics = new Set<string>();
      ws.onMessage((message) => {
        const m = JSON.parse(String(message));
        if (m.type === 'subscribe') subscribed.push(m.topics);
        for (const t of m.topics) m.type === 'subscribe' ? topics.add(t) : topics.delete(t);
        ws.send(JSON.stringify({ type: 'subscribed', topics: [...topics] }));
      });
    });
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  const push = (events: { topic: string; name: string; data: unknown }[]) =>
    sockets.at(-1)!.send(JSON.stringify({ type: 'events', events: events.map((e) => ({ ...e, at: new Date().toISOString() })) }));
  const summary = ({ payload: _p, result: _r, ...task }: Record<string, unknown>) => task;

  it('subscribes to the tasks topic and applies pushed task events to the table', async () => {
    await page.goto(server.url + '/#/tasks');
    await page.waitForSelector('[data-connection=live]', WAIT);
    await page.waitForSelector('text=No tasks match.', WAIT);
    await eventually(() => subscribed.some((t) => t.includes('tasks')), WAIT.timeout, 'the page to subscribe');

    // Live, the page does not poll: this task shows up only because its event is pushed.
    const task = await server.api.submit({ type: 'email.send', payload: { to: 'a@example.com' } });
    push([{ topic: 'tasks', name: 'task.created', data: { task: summary(task) } }]);
    await page.waitForSelector(`[data-task-id="${task.id}"] [data-status=queued]`, WAIT);

    const agent = await server.api.registerAgent(['email.send']);
    const [claimed] = await server.api.claim(agent.id);
    const done = (await server.api.post(`/v1/tasks/${task.id}/complete`, { agentId: agent.id })).body;
    push([
      { topic: 'tasks', name: 'task.claimed', data: { task: summary(claimed) } },
      { topic: 'tasks', name: 'task.completed', data: { task: summary(done) } },
    ]);
    await page.waitForSelector(`[data-task-id="${task.id}"] [data-status=completed]`, WAIT);
  });

  it('shows the latest state of a task whatever the order and batching of its events', async () => {
    // The page is on the tasks view, live, from the test before.
    const agent = await server.api.registerAgent(['order.test']);
    const states = [];
    for (let i = 0; i < 2; i++) {
      const created = await server.api.submit({ type: 'order.test' });
      const [claimed] = await server.api.claim(agent.id);
      const done = (await server.api.post(`/v1/tasks/${created.id}/complete`, { agentId: agent.id })).body;
      states.push([created, claimed, done].map(summary));
    }
    const [first, second] = states;
    // The first task's events in one batch, newest first; the second's one batch each, newest first.
    push([
      { topic: 'tasks', name: 'task.completed', data: { task: first[2] } },
      { topic: 'tasks', name: 'task.claimed', data: { task: first[1] } },
      { topic: 'tasks', name: 'task.created', data: { task: first[0] } },
    ]);
    push([{ topic: 'tasks', name: 'task.completed', data: { task: second[2] } }]);
    push([{ topic: 'tasks', name: 'task.claimed', data: { task: second[1] } }]);
    push([{ topic: 'tasks', name: 'task.created', data: { task: second[0] } }]);
    await page.waitForSelector(`[data-task-id="${second[0].id}"]`, WAIT);
    // Let the last batch be rendered before reading the rows.
    await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
    for (const task of [first[0], second[0]]) {
      assert.equal(await page.getAttribute(`[data-task-id="${task.id}"] [data-status]`, 'data-status'), 'completed');
    }
  });

  it('paints the stats the stream pushes on the overview', async () => {
    await page.goto(server.url + '/#/');
    await page.waitForSelector('[data-ready=overview]', WAIT);
    await eventually(() => subscribed.some((t) => t.includes('stats')), WAIT.timeout, 'the page to subscribe');
    const stats = (await server.api.get('/v1/stats')).body;
    stats.agents.byStatus.online = 4242;
    push([{ topic: 'stats', name: 'stats', data: stats }]);
    await page.waitForFunction(() => document.querySelector('[data-stat=agents-online]')?.textContent === '4,242', undefined, WAIT);
  });

  it('shows the drop, polls meanwhile, and reconnects by itself', async () => {
    const before = sockets.length;
    await sockets.at(-1)!.close();
    await page.waitForSelector('[data-connection=polling]', WAIT);
    await page.waitForSelector('[data-connection=live]', WAIT);
    assert.equal(sockets.length, before + 1);
    // The new socket is told again what the page is showing.
    await eventually(() => subscribed.filter((t) => t.includes('stats')).length >= 2, WAIT.timeout, 'the page to subscribe again');
  });
});
