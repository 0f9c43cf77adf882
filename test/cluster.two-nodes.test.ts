import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { once } from 'node:events';
import pg from 'pg';
import WebSocket from 'ws';
import { FleetClient, type TaskJson } from '../src/client/index.js';
import { eventually, type Api } from './helpers.js';
import { clusterEnv, startNode, type NodeProcess } from './cluster/node-process.js';
import { TEST_DATABASE_URL } from './store/postgres.js';

/** Two `fleetd start` processes on one PostgreSQL schema and one Redis prefix. */
describe('two fleetd nodes on PostgreSQL and Redis', { timeout: 90_000 }, () => {
  const env = clusterEnv();
  let a: NodeProcess;
  let b: NodeProcess;

  before(async () => {
    [a, b] = await Promise.all([startNode(env), startNode(env)]);
  });
  after(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
    const client = new pg.Client({ connectionString: TEST_DATABASE_URL });
    await client.connect();
    await client.query(`DROP SCHEMA IF EXISTS ${env.FLEETD_DATABASE_SCHEMA} CASCADE`);
    await client.end();
  });

  it('wakes an agent long-polling on A when a task is submitted on B', async (t) => {
    const agent = await a.api.registerAgent(['wake']);
    assert.deepEqual(await a.api.claim(agent.id, 1, 0), []);
    const claim = a.api.claim(agent.id, 1, 20_000);
    // Let the long-poll register on A; if it has not yet, it finds the task at once instead (and still passes).
    await new Promise((r) => setTimeout(r, 300));
    const submitted = await b.api.submit({ type: 'wake', payload: { from: 'B' } });
    const ackedAt = Date.now();
    const [got] = await claim;
    assert.equal(got?.id, submitted.id, 'the long-poll on A returned the task submitted on B');
    assert.deepEqual(got.payload, { from: 'B' });
    t.diagnostic(`woken ${Date.now() - ackedAt} ms after B acknowledged the submit`);
  });

  it('pushes a task submitted on B to an agent connected to A over WebSocket', async (t) => {
    const agent = new FleetClient({ url: a.url, apiKey: env.FLEETD_ADMIN_KEY }).agent({ name: 'pushed', capabilities: ['push'], transport: 'ws' });
    const connected = once(agent, 'connected');
    const got = new Promise<TaskJson>((resolve) =>
      agent.work(async (task) => {
        resolve(task);
        return { ok: true };
      }),
    );
    assert.deepEqual((await connected)[0], { transport: 'ws' });
    const submitted = await new FleetClient({ url: b.url, apiKey: env.FLEETD_ADMIN_KEY }).submit({ type: 'push', payload: { from: 'B' } });
    const ackedAt = Date.now();
    const task = await got;
    t.diagnostic(`pushed ${Date.now() - ackedAt} ms after B acknowledged the submit`);
    assert.equal(task.id, submitted.task.id);
    await agent.stop();
  });

  it('streams events from B to an observer on A', async () => {
    const ws = new WebSocket(`${a.url.replace('http', 'ws')}/v1/events`, { headers: { authorization: `Bearer ${env.FLEETD_ADMIN_KEY}` } });
    await once(ws, 'open');
    const messages: { type: string; events?: { name: string; data: { task: { id: number } } }[] }[] = [];
    let onMessage: () => void = () => {};
    ws.on('message', (raw) => {
      messages.push(JSON.parse(String(raw)));
      onMessage();
    });
    const next = (match: (m: (typeof messages)[number]) => boolean) =>
      new Promise<(typeof messages)[number]>((resolve) => {
        const check = () => {
          const found = messages.find(match);
          if (found) resolve(found);
        };
        onMessage = check;
        check();
      });
    ws.send(JSON.stringify({ type: 'subscribe', topics: ['queue:observed'] }));
    await next((m) => m.type === 'subscribed');
    const submitted = await b.api.submit({ type: 'observed' });
    const batch = await next((m) => m.type === 'events' && m.events!.some((e) => e.name === 'task.created'));
    assert.equal(batch.events!.find((e) => e.name === 'task.created')!.data.task.id, submitted.id);
    ws.close();
  });

  it('shows the same counters on both nodes', async () => {
    const agent = await b.api.registerAgent(['count']);
    for (let i = 0; i < 5; i++) await (i % 2 ? a : b).api.submit({ type: 'count' });
    for (const task of await a.api.claim(agent.id, 3)) {
      await b.api.post(`/v1/tasks/${task.id}/complete`, { agentId: agent.id, result: null });
    }
    const [sa, sb] = await Promise.all([a.api.get('/v1/stats'), b.api.get('/v1/stats')]);
    assert.deepEqual(sa.body.tasks, sb.body.tasks);
    assert.deepEqual(sa.body.agents, sb.body.agents);
    assert.equal(sa.body.tasks.byType.count.completed, 3);
    assert.equal(sa.body.tasks.byType.count.queued, 2);
  });

  it('loses nothing when A is killed with SIGKILL: every task completes exactly once', async () => {
    const N = 120;
    const tasks = Array.from({ length: N }, (_, i) => ({ type: 'job', payload: { i }, leaseMs: 1_500 }));
    await a.api.post('/v1/tasks/batch', { tasks: tasks.slice(0, N / 2) });
    await b.api.post('/v1/tasks/batch', { tasks: tasks.slice(N / 2) });
    const successes = new Map<number, number>();
    let done = false;
    let killed = false;

    // A worker is an agent with a list of node URLs: it moves to the next one when its node dies.
    async function worker(nodes: NodeProcess[]): Promise<void> {
      let current = 0;
      const api = (): Api => nodes[current].api;
      const agent = await api().registerAgent(['job'], { maxConcurrency: 5 });
      while (!done) {
        try {
          const claimed = await api().claim(agent.id, 5, 500);
          for (const task of claimed) {
            if (nodes[current] === a && successes.size >= 30 && !killed) {
              killed = true;
              await a.kill();
            }
            const res = await api().post(`/v1/tasks/${task.id}/complete`, { agentId: agent.id, result: { by: agent.id } });
            if (res.status === 200) successes.set(task.id, (successes.get(task.id) ?? 0) + 1);
          }
        } catch {
          current = (current + 1) % nodes.length;
        }
      }
    }

    const workers = [worker([a, b]), worker([a, b]), worker([a, b]), worker([b, a])];
    await eventually(
      async () => (await b.api.get('/v1/stats')).body.tasks.byType.job?.completed === N,
      60_000,
      'every task completed',
    );
    done = true;
    await Promise.all(workers);
    assert.ok(killed, 'A was killed while work was under way');
    const stats = (await b.api.get('/v1/stats')).body.tasks.byType.job;
    assert.deepEqual(stats, { completed: N }, 'nothing queued, leased or dead: nothing lost');
    for (const [id, n] of successes) assert.equal(n, 1, `task ${id} was completed once`);
    // A complete that A committed just before dying has no 200 to show; the store's record counts.
    assert.ok(successes.size >= N - 5 * 4, `${successes.size} acknowledged completions`);
  });
});
