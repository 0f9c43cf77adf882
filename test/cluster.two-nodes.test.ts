import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { once } from 'node:events';
import WebSocket from 'ws';
import { FleetClient, type TaskJson } from '../src/client/index.js';
import { eventually, within } from './helpers.js';
import { startNode, twoNodes, type NodeProcess } from './cluster/node-process.js';
import { connect, connectAgent, observe, type Peer } from './ws-helpers.js';

const released = (peer: Peer, resource: string) => peer.events().some((e) => e.name === 'lock.released' && e.data.lock.resources[0] === resource);

async function lockAndRelease(node: NodeProcess, agentId: string, resource: string): Promise<void> {
  const lock = await node.api.post('/v1/locks', { agentId, resources: [resource], ttlMs: 60_000 });
  assert.equal(lock.status, 200, JSON.stringify(lock.body));
  const release = await node.api.delete(`/v1/locks/${lock.body.id}`);
  assert.ok(release.status < 300, JSON.stringify(release.body));
}

/** Two `fleetd start` processes on one PostgreSQL schema and one Redis prefix. */
describe('two fleetd nodes on PostgreSQL and Redis', { timeout: 90_000 }, () => {
  const cluster = twoNodes();

  it('wakes an agent long-polling on A when a task is submitted on B', async (t) => {
    const { a, b } = cluster;
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
    const { a, b, env } = cluster;
    const agent = new FleetClient({ url: a.url, apiKey: env.FLEETD_ADMIN_KEY }).agent({ name: 'pushed', capabilities: ['push'], transport: 'ws' });
    const connected = once(agent, 'connected');
    const got = new Promise<TaskJson>((resolve) =>
      agent.work(async (task) => {
        resolve(task);
        return { ok: true };
      }),
    );
    try {
      assert.deepEqual((await within(connected, 10_000, 'the agent to connect'))[0], { transport: 'ws' });
      const submitted = await new FleetClient({ url: b.url, apiKey: env.FLEETD_ADMIN_KEY }).submit({ type: 'push', payload: { from: 'B' } });
      const ackedAt = Date.now();
      const task = await within(got, 10_000, 'the task pushed');
      t.diagnostic(`pushed ${Date.now() - ackedAt} ms after B acknowledged the submit`);
      assert.equal(task.id, submitted.task.id);
    } finally {
      await agent.stop();
    }
  });

  it('streams events from B to an observer on A', async () => {
    const { a, b, env } = cluster;
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

  it("tells an observer that resumes on a node of another node's task events it may not have heard, never skips them in silence", async () => {
    const { a, b, env } = cluster;
    const auth = { authorization: `Bearer ${env.FLEETD_ADMIN_KEY}` };
    const first = await connect(`${b.url}/v1/events`, auth);
    let late: Peer | undefined;
    try {
      first.send({ type: 'subscribe', topics: ['agents'] });
      const { epoch, seq } = await first.next('subscribed');
      const unheard = await a.api.submit({ type: 'resumed-elsewhere' });
      // Registered on A after the submit: once B shows it, B has heard whatever it hears of the submit.
      const agent = await a.api.registerAgent(['resumed-elsewhere']);
      await eventually(() => first.events().some((e) => e.name === 'agent.registered' && e.data.agent.id === agent.id));
      const resumed = await connect(`${b.url}/v1/events?since=${seq}&epoch=${epoch}`, auth);
      late = resumed;
      resumed.send({ type: 'subscribe', topics: ['tasks'] });
      await resumed.next('subscribed');
      const told = () => resumed.received.some((m) => m.type === 'gap');
      await eventually(() => told() || resumed.events().some((e) => e.name === 'task.created' && e.data.task.id === unheard.id), 5_000, 'the task replayed, or a gap');
      // Subscribed, B hears every task event of A's.
      const heard = await a.api.submit({ type: 'resumed-elsewhere' });
      await eventually(() => resumed.events().some((e) => e.name === 'task.created' && e.data.task.id === heard.id), 5_000, "the next task's creation");
    } finally {
      await Promise.all([first.close(), late?.close()]);
    }
  });

  it('shows the same counters on both nodes', async () => {
    const { a, b } = cluster;
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
    // Throughput and latency are of every node's completions, as the bus relays them: B's are A's.
    await eventually(async () => {
      const [la, lb] = await Promise.all([a.api.get('/v1/stats'), b.api.get('/v1/stats')]).then((r) => r.map((s) => s.body.latencyMs.count));
      return la >= 3 && la === lb;
    });
  });

  it("tells observers on either node of a task's lock once, though both nodes hear of its lease", async () => {
    const { a, b, env } = cluster;
    const observers = await Promise.all([a, b].map((node) => observe(node.url, env.FLEETD_ADMIN_KEY, ['locks'])));
    try {
      const agent = await b.api.registerAgent(['locking']);
      await b.api.submit({ type: 'locking', locks: ['relay/once.txt'] });
      const [task] = await b.api.claim(agent.id, 1);
      await b.api.post(`/v1/tasks/${task.id}/complete`, { agentId: agent.id, result: null });
      // Each node's messages arrive in order: once A shows B's marker, A has heard of the task's
      // events (and said whatever it says of them); once B shows A's marker, B has heard that too.
      await lockAndRelease(b, agent.id, 'relay/marker-b');
      await eventually(() => released(observers[0], 'relay/marker-b'));
      await lockAndRelease(a, agent.id, 'relay/marker-a');
      await eventually(() => released(observers[1], 'relay/marker-a'));
      await eventually(() => released(observers[0], 'relay/marker-a') && released(observers[1], 'relay/marker-b'));
      for (const [i, peer] of observers.entries()) {
        const names = peer.events().filter((e) => e.data.lock.resources[0] === 'relay/once.txt').map((e) => e.name);
        assert.deepEqual(names, ['lock.acquired', 'lock.released'], `the observer on ${i === 0 ? 'A' : 'B'}`);
      }
    } finally {
      await Promise.all(observers.map((peer) => peer.close()));
    }
  });

  it('counts a dead-lettered task in the metrics of the node that did it only, so that their sum is the cluster\'s', async () => {
    const { a, b, env } = cluster;
    const observer = await observe(a.url, env.FLEETD_ADMIN_KEY, ['queue:relay-dead']);
    try {
      const agent = await b.api.registerAgent(['relay-dead']);
      await b.api.submit({ type: 'relay-dead', maxAttempts: 1 });
      const [task] = await b.api.claim(agent.id, 1);
      await b.api.post(`/v1/tasks/${task.id}/fail`, { agentId: agent.id, error: { message: 'no' }, retryable: false });
      // A has heard of it: its observer has the event.
      await eventually(() => observer.events().some((e) => e.name === 'task.dead'));
      const dead = async (node: NodeProcess) => {
        const text = (await node.api.get<string>('/metrics')).body;
        return Number(/^fleetd_tasks_dead_total\{type="relay-dead"\} (\d+)/m.exec(text)?.[1] ?? 0);
      };
      assert.deepEqual([await dead(a), await dead(b)], [0, 1]);
    } finally {
      await observer.close();
    }
  });

  it('loses nothing when A is killed with SIGKILL: SDK agents move to B and every task completes exactly once', async (t) => {
    const { a, b, env } = cluster;
    const N = 400;
    const urls = [a.url, b.url];
    const runs = new Map<number, number>();
    const runsAfterKill = new Map<string, number>();
    let killedAt = 0;
    let killing: Promise<void> | undefined;
    // Handlers that take a little while, so that A dies with tasks in flight on its agents.
    const handler = (name: string) => async (task: TaskJson) => {
      runs.set(task.id, (runs.get(task.id) ?? 0) + 1);
      if (killedAt) runsAfterKill.set(name, (runsAfterKill.get(name) ?? 0) + 1);
      if (!killing && runs.size >= N / 3) {
        killedAt = Date.now();
        killing = a.kill();
      }
      await new Promise((r) => setTimeout(r, 5 + (task.id % 20)));
      return { by: name };
    };
    // Agents with both URLs: three start on A (two on WebSocket, one long-polling), one on B.
    const agents = [
      { name: 'ws-a1', urls, transport: 'ws' as const },
      { name: 'ws-a2', urls, transport: 'ws' as const },
      { name: 'poll-a', urls, transport: 'poll' as const },
      { name: 'ws-b', urls: [b.url, a.url], transport: 'ws' as const },
    ].map(({ name, urls, transport }) => {
      const agent = new FleetClient({ urls, apiKey: env.FLEETD_ADMIN_KEY }).agent({ name, capabilities: ['job'], concurrency: 4, transport, reconnect: { minMs: 50, maxMs: 1_000 } });
      agent.on('error', () => {});
      return { name, agent };
    });
    // The agents stop whatever fails: left running, they would retry the nodes after `after` stopped them, for ever.
    const stopAgents = () => Promise.all(agents.map(({ agent }) => agent.stop()));

    // The submitter also starts on A, and keeps submitting while A dies.
    const submitter = new FleetClient({ urls, apiKey: env.FLEETD_ADMIN_KEY });
    let submitted = 0;
    const submit20 = async () => {
      await submitter.submitBatch(Array.from({ length: 20 }, (_, j) => ({ type: 'job', payload: { i: submitted + j }, leaseMs: 10_000 })));
      submitted += 20;
    };
    const fromA = ['ws-a1', 'ws-a2', 'poll-a'];
    try {
      await Promise.all(agents.map(({ name, agent }) => agent.work(handler(name))));
      while (submitted < N) await submit20();
      // More work until each of A's agents has run a task through B: on a loaded machine the others
      // could drain the rest before the last of them reconnects, and it would have nothing to run.
      await eventually(
        async () => {
          if (killedAt > 0 && fromA.every((name) => (runsAfterKill.get(name) ?? 0) > 0)) return true;
          await submit20();
          await new Promise((r) => setTimeout(r, 100));
          return false;
        },
        30_000,
        "each of A's agents ran a task after the kill",
      ).catch((err: Error) => {
        throw new Error(`${err.message}: runs after the kill ${JSON.stringify(Object.fromEntries(runsAfterKill))}, killed ${killedAt > 0}, ${submitted} submitted`);
      });
      await eventually(async () => (await b.api.get('/v1/stats')).body.tasks.byType.job?.completed === submitted, 60_000, 'every task completed');
    } finally {
      await stopAgents();
    }
    await killing;
    assert.ok(killedAt > 0, 'A was killed while work was under way');
    assert.equal(submitter.url, b.url, 'the submitter moved to B');

    const tasks: TaskJson[] = [];
    for (let cursor: string | null = ''; cursor !== null; ) {
      const page: { items: TaskJson[]; nextCursor: string | null } = (await b.api.get(`/v1/tasks?type=job&limit=1000${cursor ? `&cursor=${cursor}` : ''}`)).body;
      tasks.push(...page.items);
      cursor = page.nextCursor;
    }
    assert.equal(tasks.length, submitted, 'each submit made one task, retried or not');
    assert.deepEqual(new Set(tasks.map((task) => (task.payload as { i: number }).i)).size, submitted);
    assert.ok(tasks.every((task) => task.status === 'completed'), 'nothing queued, leased or dead: nothing lost');
    for (const task of tasks) assert.equal(runs.get(task.id), 1, `task ${task.id} ran once`);
    for (const name of fromA) assert.ok((runsAfterKill.get(name) ?? 0) > 0, `${name} carried on via B`);
    t.diagnostic(`runs after the kill by agent: ${JSON.stringify(Object.fromEntries(runsAfterKill))}`);

    // A node that joins afterwards counts the same as the survivor.
    const c = await startNode(env);
    try {
      const [sb, sc] = await Promise.all([b.api.get('/v1/stats'), c.api.get('/v1/stats')]);
      assert.deepEqual(sc.body.tasks, sb.body.tasks);
      assert.deepEqual(sc.body.agents, sb.body.agents);
    } finally {
      await c.stop();
    }
  });
});

describe('an agent moving between two nodes inside its disconnect grace', { timeout: 60_000 }, () => {
  const cluster = twoNodes({ FLEETD_AGENT_DISCONNECT_GRACE_MS: '1000' });

  it('keeps the leases B welcomed it back with when the grace of its socket on A runs out', async () => {
    const { a, b } = cluster;
    const agent = await a.api.registerAgent(['move']);
    const onA = await connectAgent(a.url, agent);
    onA.peer.send({ type: 'credit', add: 1 });
    const task = await a.api.submit({ type: 'move' });
    await onA.peer.next('tasks');
    await onA.peer.close();
    const onB = await connectAgent(b.url, agent);
    try {
      assert.deepEqual(onB.welcome.leased.map((t: { id: number }) => t.id), [task.id]);
      // A's grace ends while the agent works on B: A must see it back and leave its lease be.
      await new Promise((r) => setTimeout(r, 2_000));
      onB.peer.send({ type: 'complete', id: task.id, ref: 'done' });
      const answer = await Promise.race([onB.peer.next('ack', (m) => m.ref === 'done'), onB.peer.next('error', (m) => m.ref === 'done')]);
      assert.equal(answer.type, 'ack', JSON.stringify(answer));
      assert.equal(answer.status, 'completed');
      assert.equal((await a.api.get(`/v1/agents/${agent.id}`)).body.status, 'online');
      assert.equal((await a.api.get(`/v1/tasks/${task.id}`)).body.attempts, 1);
    } finally {
      await onB.peer.close();
    }
  });
});
