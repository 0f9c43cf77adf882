import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import { FleetApiError, FleetClient, NonRetryableError, type TaskJson } from '../src/client/index.js';
import { eventually, kill9, nextEvent, startTestServer, type TestServer, within } from './helpers.js';
import { startHttpProxy } from './http-proxy.js';
import { CuttingProxy } from './tcp-proxy.js';

describe('agent SDK', () => {
  let server: TestServer;
  let client: FleetClient;
  before(async () => {
    server = await startTestServer({ agentDisconnectGraceMs: 200, taskBackoffMs: 10 });
    client = new FleetClient({ url: server.url, apiKey: server.adminKey });
  });
  after(() => server.stop());

  it('works tasks pushed over WebSocket, never running more than its concurrency', async () => {
    const agent = client.agent({ name: 'echo', capabilities: ['sdk-echo'], concurrency: 3 });
    let running = 0;
    let most = 0;
    const connected = once(agent, 'connected');
    await agent.work(async (task) => {
      most = Math.max(most, ++running);
      await new Promise((r) => setTimeout(r, 5));
      running--;
      return { echoed: task.payload };
    });
    try {
      assert.deepEqual((await within(connected, 10_000, 'the agent to connect'))[0], { transport: 'ws' });
      // Listening before submitting, here and below: a pushed task can be done before the submit's answer is read.
      let left = 20;
      const allDone = nextEvent(server, 'task.completed', (e) => e.task.type === 'sdk-echo' && --left === 0);
      await client.submitBatch(Array.from({ length: 20 }, (_, i) => ({ type: 'sdk-echo', payload: i })));
      await allDone;
      const done = await client.list({ type: 'sdk-echo', status: 'completed', limit: 100 });
      assert.equal(done.items.length, 20);
      assert.ok(done.items.every((t) => (t.result as { echoed: number }).echoed === t.payload && t.agentId === agent.id));
      assert.ok(most <= 3, `ran ${most} at once`);
    } finally {
      await agent.stop();
    }
  });

  it('fails a task whose handler throws for a retry, and dead-letters it on NonRetryableError', async () => {
    const agent = client.agent({ name: 'flaky', capabilities: ['sdk-flaky'], concurrency: 2 });
    const seen = new Map<number, number>();
    await agent.work(async (task: TaskJson) => {
      const n = (seen.get(task.id) ?? 0) + 1;
      seen.set(task.id, n);
      if ((task.payload as string) === 'bad') throw new NonRetryableError('cannot parse this');
      if (n === 1) throw new Error('transient');
      return 'ok';
    });
    try {
      const flaky = (await client.submit({ type: 'sdk-flaky', payload: 'flaky' })).task;
      const completed = nextEvent(server, 'task.completed', (e) => e.task.id === flaky.id);
      const bad = (await client.submit({ type: 'sdk-flaky', payload: 'bad' })).task;
      const dead = nextEvent(server, 'task.dead', (e) => e.task.id === bad.id);
      assert.equal((await completed).task.attempts, 2);
      const buried = await client.get((await dead).task.id);
      assert.equal(buried.attempts, 1);
      assert.deepEqual(buried.error, { name: 'NonRetryableError', message: 'cannot parse this' });
    } finally {
      await agent.stop();
    }
  });

  it('extends the lease while a slow handler runs', async () => {
    const agent = client.agent({ name: 'slow', capabilities: ['sdk-slow'] });
    await agent.work(async () => {
      await new Promise((r) => setTimeout(r, 900));
      return 'finally';
    });
    try {
      const task = (await client.submit({ type: 'sdk-slow', leaseMs: 300 })).task;
      const requeued = nextEvent(server, 'task.requeued', (e) => e.task.id === task.id, 2_000).then(() => 'requeued', () => 'not requeued');
      await nextEvent(server, 'task.completed', (e) => e.task.id === task.id);
      const done = await client.get(task.id);
      assert.equal(done.attempts, 1);
      assert.equal(done.result, 'finally');
      assert.equal(await requeued, 'not requeued');
    } finally {
      await agent.stop();
    }
  });

  it('over HTTP, receives a long payload once: its extensions and completion are answered without it', async () => {
    const answers: { method: string; url: string; bytes: number }[] = [];
    const proxy = await startHttpProxy(server.url, { answered: answers });
    const proxied = new FleetClient({ url: proxy.url, apiKey: server.adminKey });
    const name = 'sdk-long-prompt';
    const agent = proxied.agent({ name, capabilities: [name], transport: 'poll' });
    // Random text, which compression shrinks by a quarter at most: an answer that carries it weighs
    // over 100 KB, one that does not a few hundred bytes. Extended every half lease, twice at least
    // while the handler runs; a lease of a second leaves half a second for the claim's answer.
    const prompt = randomBytes(150_000).toString('base64');
    try {
      await agent.work(async (task) => {
        await new Promise((r) => setTimeout(r, 2_200));
        return { chars: (task.payload as { prompt: string }).prompt.length };
      });
      const task = (await client.submit({ type: name, payload: { prompt }, leaseMs: 1_000 })).task;
      await nextEvent(server, 'task.completed', (e) => e.task.id === task.id, 15_000);
      assert.deepEqual((await client.get(task.id)).result, { chars: prompt.length });
      const to = (op: string) => answers.filter((a) => a.method === 'POST' && new URL(a.url, 'http://x').pathname === `/v1/tasks/${task.id}/${op}`);
      const extensions = to('extend');
      assert.ok(extensions.length >= 2, `extended ${extensions.length} times`);
      for (const a of [...extensions, ...to('complete')]) {
        assert.equal(new URL(a.url, 'http://x').searchParams.get('return'), 'minimal', a.url);
        assert.ok(a.bytes < 2_000, `${a.url} answered ${a.bytes} bytes`);
      }
      assert.equal(to('complete').length, 1);
      const carried = answers.filter((a) => a.bytes > 100_000).map((a) => new URL(a.url, 'http://x').pathname);
      assert.deepEqual(carried, ['/v1/tasks/claim'], 'the prompt reached the agent once, with its claim');
    } finally {
      await agent.stop();
      await proxy.stop();
    }
  });

  it('falls back to long-poll when asked, with the same handler contract', async () => {
    const agent = client.agent({ name: 'poller', capabilities: ['sdk-poll'], concurrency: 2, transport: 'poll' });
    const transport = once(agent, 'connected');
    await agent.work(async (task) => `polled ${task.payload}`);
    try {
      assert.deepEqual((await within(transport, 10_000, 'the agent to connect'))[0], { transport: 'poll' });
      const completed = nextEvent(server, 'task.completed', (e) => e.task.type === 'sdk-poll');
      const task = (await client.submit({ type: 'sdk-poll', payload: 7 })).task;
      await completed;
      assert.equal((await client.get(task.id)).result, 'polled 7');
    } finally {
      await agent.stop();
    }
  });

  it('a long-poll agent started again with its id and token takes back the task it held, as attempt 1', async () => {
    const { agent: held, token } = await client.registerAgent({ name: 'restarted-poller', capabilities: ['sdk-held'] });
    // A lease far longer than the test: the task completes in time only if the agent takes it back.
    const task = (await client.submit({ type: 'sdk-held', leaseMs: 600_000 })).task;
    const [claimed] = await server.api.as(token).claim(held.id);
    assert.equal(claimed.id, task.id);
    const agent = client.agent({ name: 'restarted-poller', capabilities: ['sdk-held'], id: held.id, token, transport: 'poll' });
    const runs: number[] = [];
    const completed = nextEvent(server, 'task.completed', (e) => e.task.id === task.id);
    await agent.work(async (t) => (runs.push(t.id), 'resumed'));
    try {
      await completed;
      const done = await client.get(task.id);
      assert.deepEqual(runs, [task.id]);
      assert.equal(done.attempts, 1);
      assert.equal(done.result, 'resumed');
    } finally {
      await agent.stop();
    }
  });

  for (const transport of ['poll', 'ws'] as const) {
    it(`a ${transport} agent started again near the end of a lease it held extends it at once, and completes the task`, async () => {
      const name = `resumed-near-lapse-${transport}`;
      const { agent: held, token } = await client.registerAgent({ name, capabilities: [name] });
      const task = (await client.submit({ type: name, leaseMs: 2_000 })).task;
      const [claimed] = await server.api.as(token).claim(held.id);
      assert.equal(claimed.id, task.id);
      // The agent comes back with less than half the lease left, and its handler outlasts what is left.
      await new Promise((r) => setTimeout(r, 1_200));
      const agent = client.agent({ name, capabilities: [name], id: held.id, token, transport });
      const warnings: Error[] = [];
      agent.on('error', (err: Error) => warnings.push(err));
      const completed = nextEvent(server, 'task.completed', (e) => e.task.id === task.id, 10_000);
      await agent.work(async () => {
        await new Promise((r) => setTimeout(r, 1_500));
        return 'in time';
      });
      try {
        await completed;
        const done = await client.get(task.id);
        assert.equal(done.attempts, 1);
        assert.equal(done.result, 'in time');
        // Neither requeued (which would make it attempt 2) nor refused as a lost lease.
        assert.deepEqual(warnings, []);
      } finally {
        await agent.stop();
      }
    });
  }

  it('tries again shortly when the first extension of a lease it took back fails for a passing reason', async () => {
    // The first extension answered 503, as a server just restarted does.
    let refused = 0;
    const proxy = await startHttpProxy(server.url, {
      answer: (req) => {
        if (req.method !== 'POST' || !new URL(req.url!, 'http://x').pathname.endsWith('/extend') || refused > 0) return undefined;
        refused++;
        return [503, { error: { code: 'FLEETD_ERR_UNAVAILABLE', message: 'starting' } }];
      },
    });
    const name = 'resumed-extension-refused';
    const { agent: held, token } = await client.registerAgent({ name, capabilities: [name] });
    const task = (await client.submit({ type: name, leaseMs: 2_000 })).task;
    const [claimed] = await server.api.as(token).claim(held.id);
    assert.equal(claimed.id, task.id);
    // Back with less than half the lease left: the regular extension, half a lease after the
    // refused one, would come after the lease lapsed.
    await new Promise((r) => setTimeout(r, 1_200));
    const proxied = new FleetClient({ url: proxy.url, apiKey: server.adminKey });
    const agent = proxied.agent({ name, capabilities: [name], id: held.id, token, transport: 'poll' });
    const warnings: Error[] = [];
    agent.on('error', (err: Error) => warnings.push(err));
    try {
      const completed = nextEvent(server, 'task.completed', (e) => e.task.id === task.id, 10_000);
      await agent.work(async () => {
        await new Promise((r) => setTimeout(r, 1_500));
        return 'in time';
      });
      await completed;
      const done = await client.get(task.id);
      assert.equal(refused, 1, 'the first extension was refused');
      assert.equal(done.attempts, 1, 'never requeued');
      assert.equal(done.result, 'in time');
      assert.deepEqual(
        warnings.map((w) => (w as FleetApiError).code),
        ['FLEETD_ERR_UNAVAILABLE'],
      );
    } finally {
      await agent.stop();
      await proxy.stop();
    }
  });

  it('extends at once, after its socket is cut and comes back, the lease of a task it is still running', async () => {
    // A server of its own, with the default disconnect grace: the agent stays online through the cut.
    const own = await startTestServer();
    const proxy = new CuttingProxy();
    const proxied = new FleetClient({ url: await proxy.start(own.url), apiKey: own.adminKey });
    const agent = proxied.agent({ name: 'cut-off', capabilities: ['sdk-cut-off'], transport: 'ws', reconnect: { minMs: 20, maxMs: 100 } });
    let release: (() => void) | undefined;
    const started = new Promise<void>((resolve) => agent.once('task', () => resolve()));
    try {
      const first = once(agent, 'connected');
      await agent.work(() => new Promise((resolve) => (release = () => resolve('after the cut'))));
      await within(first, 10_000, 'the agent to connect');
      // A long lease: its extensions are due every 30 s, far beyond this test. The extensions that
      // would have fallen in a cut are what the agent makes up for when its socket is back.
      const task = (await own.api.submit({ type: 'sdk-cut-off', leaseMs: 60_000 })).id;
      await within(started, 10_000, 'the task to start');
      const extended = nextEvent(own, 'task.extended', (e) => e.task.id === task, 10_000);
      const back = once(agent, 'connected');
      proxy.cut();
      await within(back, 10_000, 'the agent to reconnect');
      await extended;
      release!();
      await eventually(async () => (await own.api.get(`/v1/tasks/${task}`)).body.status === 'completed', 10_000, 'the task completed');
      const done = (await own.api.get(`/v1/tasks/${task}`)).body;
      assert.equal(done.attempts, 1);
      assert.equal(done.result, 'after the cut');
    } finally {
      release?.();
      await agent.stop();
      await proxy.stop();
      await own.stop();
    }
  });

  it('runs afresh a task that came back to it while it still ran the task under a lease now gone, and drops that run\'s outcome', async () => {
    // Cut off past the server's 200 ms grace, the agent goes offline and its task back to the queue;
    // when it is back, the task (attempt 2) is pushed to it again while its first run still goes on.
    const proxy = new CuttingProxy();
    const proxied = new FleetClient({ url: await proxy.start(server.url), apiKey: server.adminKey });
    const agent = proxied.agent({ name: 'came-back', capabilities: ['sdk-came-back'], concurrency: 2, transport: 'ws', reconnect: { minMs: 20, maxMs: 100 } });
    const errors: Error[] = [];
    agent.on('error', (err: Error) => errors.push(err));
    const runs: number[] = [];
    let releaseFirst: (() => void) | undefined;
    const firstStarted = new Promise<void>((resolve) => agent.once('task', () => resolve()));
    try {
      await agent.work((task) => {
        runs.push(task.attempts);
        if (task.attempts > 1) return Promise.resolve(`attempt ${task.attempts}`);
        return new Promise((resolve) => (releaseFirst = () => resolve('attempt 1, late')));
      });
      const task = (await client.submit({ type: 'sdk-came-back', leaseMs: 60_000 })).task;
      await within(firstStarted, 10_000, 'the first run to start');
      const requeued = nextEvent(server, 'task.requeued', (e) => e.task.id === task.id && e.reason === 'agent_offline', 10_000);
      proxy.refusing = true;
      proxy.cut();
      await requeued;
      proxy.refusing = false;
      await eventually(async () => (await client.get(task.id)).status === 'completed', 10_000, 'the task completed');
      assert.deepEqual(runs, [1, 2]);
      releaseFirst!();
      await eventually(() => agent.inFlight === 0, 5_000, 'the first run to end');
      const done = await client.get(task.id);
      assert.equal(done.attempts, 2);
      assert.equal(done.result, 'attempt 2', 'the first run\'s late outcome changed nothing');
      // What the server refused: nothing (the cut's reconnects are the rest).
      assert.deepEqual(errors.filter((err) => err instanceof FleetApiError), []);
    } finally {
      releaseFirst?.();
      await agent.stop();
      await proxy.stop();
    }
  });

  it('falls back to long-poll by itself behind a proxy that refuses WebSockets', async () => {
    const proxy = await startHttpProxy(server.url);
    const proxied = new FleetClient({ url: proxy.url, apiKey: server.adminKey });
    const agent = proxied.agent({ name: 'proxied', capabilities: ['sdk-proxied'] });
    const connected = once(agent, 'connected');
    try {
      await agent.work(async (task) => `through the proxy ${task.payload}`);
      assert.deepEqual((await connected)[0], { transport: 'poll' });
      const completed = nextEvent(server, 'task.completed', (e) => e.task.type === 'sdk-proxied');
      const task = (await client.submit({ type: 'sdk-proxied', payload: 1 })).task;
      await completed;
      assert.equal((await client.get(task.id)).result, 'through the proxy 1');
    } finally {
      await agent.stop();
      await proxy.stop();
    }
  });

  it('gives its slot back with the completion, before the answer: the next task is leased within one round trip', async () => {
    // The server's answers are held in a real proxy once the first task arrives: the agent never
    // hears its completion acknowledged, yet its credit went with the completion, so the server
    // leases it the next task at once. (An agent that waited for the answer would get it a round
    // trip later; here, never.)
    const proxy = new CuttingProxy();
    const proxied = new FleetClient({ url: await proxy.start(server.url), apiKey: server.adminKey });
    const agent = proxied.agent({ name: 'one-trip', capabilities: ['sdk-one-trip'], concurrency: 1, transport: 'ws' });
    try {
      await agent.work(async () => {
        proxy.holdReplies(true);
        return 'done';
      });
      const first = (await client.submit({ type: 'sdk-one-trip', payload: 1 })).task;
      await eventually(async () => (await client.get(first.id)).status === 'completed', 5_000, 'the first task completed');
      const second = (await client.submit({ type: 'sdk-one-trip', payload: 2 })).task;
      await eventually(async () => (await client.get(second.id)).status === 'leased', 5_000, 'the second task leased to the agent');
      assert.equal((await client.get(second.id)).agentId, agent.id);
      proxy.holdReplies(false);
      await eventually(async () => (await client.get(second.id)).status === 'completed', 5_000, 'the second task completed');
    } finally {
      proxy.holdReplies(false);
      await agent.stop();
      await proxy.stop();
    }
  });

  it('runs a task again when the server hands it straight back while its failure is still unanswered', async () => {
    // No backoff: a failed task is queued again at once. The only agent, at concurrency 1, sent its
    // slot's credit with the failure, so the task comes back in the failure's own round trip, a new
    // lease of the same id. It must run again, not pass for the run that failed (whose lease, a
    // minute long here, would then hold it idle).
    const eager = await startTestServer({ taskBackoffMs: 0 });
    const agent = new FleetClient({ url: eager.url, apiKey: eager.adminKey }).agent({ name: 'retrier', capabilities: ['sdk-retry'], concurrency: 1, transport: 'ws' });
    const attempts: number[] = [];
    try {
      await agent.work(async (task) => {
        attempts.push(task.attempts);
        if (attempts.length < 3) throw new Error('not yet');
        return 'done';
      });
      const completed = nextEvent(eager, 'task.completed', (e) => e.task.type === 'sdk-retry', 10_000);
      const task = (await eager.api.post('/v1/tasks', { type: 'sdk-retry', payload: 1, leaseMs: 60_000, maxAttempts: 5 })).body.task;
      await completed;
      assert.deepEqual(attempts, [1, 2, 3]);
      assert.equal((await eager.api.get(`/v1/tasks/${task.id}`)).body.result, 'done');
    } finally {
      await agent.stop();
      await eager.stop();
    }
  });

  it('runs a task it released again when the server hands it straight back, a release spending no attempt', async () => {
    // The only agent, at concurrency 1: a release frees its slot's credit at once, so the task comes
    // back as a new lease of the same id, often before the release is answered. It must run again.
    const agent = client.agent({ name: 'releaser', capabilities: ['sdk-release'], concurrency: 1, transport: 'ws' });
    const attempts: number[] = [];
    try {
      await agent.work(async (task, ctx) => {
        attempts.push(task.attempts);
        if (attempts.length < 3) ctx.release(0, 'not yet');
        return 'done';
      });
      const completed = nextEvent(server, 'task.completed', (e) => e.task.type === 'sdk-release', 10_000);
      const task = (await client.submit({ type: 'sdk-release', payload: 1, leaseMs: 60_000 })).task;
      await completed;
      assert.equal((await client.get(task.id)).result, 'done');
      assert.deepEqual(attempts, [1, 1, 1]);
    } finally {
      await agent.stop();
    }
  });

  it('stop() finishes the task in hand, then takes no more', async () => {
    const agent = client.agent({ name: 'stopper', capabilities: ['sdk-stop'], concurrency: 2 });
    let release!: () => void;
    const started = new Promise<void>((resolve) => agent.once('task', () => resolve()));
    await agent.work(() => new Promise((resolve) => (release = () => resolve('finished'))));
    const first = (await client.submit({ type: 'sdk-stop' })).task;
    try {
      await within(started, 10_000, 'the task to start');
    } catch (err) {
      await agent.stop();
      throw err;
    }
    const stopped = agent.stop();
    release();
    await stopped;
    assert.equal((await client.get(first.id)).status, 'completed');
    const later = (await client.submit({ type: 'sdk-stop' })).task;
    const agentRow = await client.request<{ status: string }>('GET', `/v1/agents/${agent.id}`);
    assert.notEqual(agentRow.status, undefined);
    assert.equal((await client.get(later.id)).status, 'queued');
  });

  it('a task whose agent process crashes mid-task is re-queued and done once by another agent', async () => {
    const { agent: crasher, token } = await client.registerAgent({ name: 'crasher', capabilities: ['fragile'] });
    const child = spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/crashing-agent.ts'], {
      env: { ...process.env, FLEETD_URL: server.url, AGENT_ID: crasher.id, AGENT_TOKEN: token },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let output = '';
    child.stdout!.on('data', (d) => (output += d));
    const exited = once(child, 'exit');
    let task: { id: number };
    try {
      await eventually(() => output.includes('ready'), 20_000, 'the crashing agent to be ready');
      const requeued = nextEvent(server, 'task.requeued', (e) => e.task.type === 'fragile', 20_000);
      task = (await client.submit({ type: 'fragile', payload: 'once' })).task;
      const [code] = await exited;
      assert.equal(code, 1);
      assert.match(output, new RegExp(`started ${task.id}`));
      const back = await requeued;
      assert.equal(back.task.id, task.id);
      assert.equal(back.reason, 'agent_offline');
    } finally {
      await kill9(child);
    }
    const runs: number[] = [];
    const rescuer = client.agent({ name: 'rescuer', capabilities: ['fragile'] });
    const completed = nextEvent(server, 'task.completed', (e) => e.task.id === task.id);
    await rescuer.work(async (t) => (runs.push(t.id), 'rescued'));
    try {
      await completed;
    } finally {
      await rescuer.stop();
    }
    const done = await client.get(task.id);
    assert.deepEqual(runs, [task.id]);
    assert.equal(done.status, 'completed');
    assert.equal(done.agentId, rescuer.id);
    assert.equal(done.attempts, 2);
  });

  it('submits, lists, cancels and subscribes as a submitter', async () => {
    const events: string[] = [];
    const subscription = await client.subscribe(['queue:sdk-submit'], (e) => events.push(e.name));
    const { task, created } = await client.submit({ type: 'sdk-submit', idempotencyKey: 'k1' });
    assert.equal(created, true);
    assert.equal((await client.submit({ type: 'sdk-submit', idempotencyKey: 'k1' })).created, false);
    assert.equal((await client.cancel(task.id)).status, 'cancelled');
    await assert.rejects(client.cancel(task.id), { name: 'FleetApiError', code: 'FLEETD_ERR_TASK_STATE', status: 409 });
    const stats = await client.stats();
    assert.ok('tasks' in stats);
    await eventually(() => events.includes('task.cancelled'), 5_000, 'the task.cancelled event');
    assert.deepEqual(events, ['task.created', 'task.cancelled']);
    subscription.close();
  });

  it('submits a batch without getting its payloads back when asked, the tasks stored whole', async () => {
    const prompt = 'p'.repeat(20_000);
    const minimal = await client.submitBatch([{ type: 'sdk-minimal', payload: { prompt } }, { type: 'sdk-minimal', payload: { prompt } }], { minimal: true });
    assert.deepEqual(
      minimal.map(({ task, created }) => [task.type, task.status, created, 'payload' in task]),
      [
        ['sdk-minimal', 'queued', true, false],
        ['sdk-minimal', 'queued', true, false],
      ],
    );
    for (const { task } of minimal) assert.deepEqual((await client.get(task.id)).payload, { prompt });
    const [whole] = await client.submitBatch([{ type: 'sdk-minimal', payload: { prompt } }]);
    assert.deepEqual(whole.task.payload, { prompt });
  });
});

describe('agent SDK reconnect', () => {
  it('reconnects after the server restarts and keeps working', async () => {
    let server = await startTestServer({ agentDisconnectGraceMs: 5_000 });
    const port = Number(new URL(server.url).port);
    const client = new FleetClient({ url: server.url, apiKey: server.adminKey });
    const agent = client.agent({ name: 'steady', capabilities: ['sdk-restart'], reconnect: { minMs: 20, maxMs: 200 } });
    try {
      await agent.work(async (task) => `done ${task.payload}`);
      const disconnected = once(agent, 'disconnected');
      await server.stop({ keepData: true });
      await disconnected;
      // Not events.once: it rejects on the 'error' events the agent emits for each refused reconnect.
      const reconnected = new Promise((resolve) => agent.once('connected', resolve));
      server = await startTestServer({ dataDir: server.dataDir, port });
      await reconnected;
      const completed = nextEvent(server, 'task.completed', (e) => e.task.type === 'sdk-restart');
      const task = (await client.submit({ type: 'sdk-restart', payload: 'after' })).task;
      await completed;
      assert.equal((await client.get(task.id)).result, 'done after');
    } finally {
      await agent.stop();
      await server.stop();
    }
  });

  it('takes new tasks after reconnecting when a handler finished while no server answered', async () => {
    let server = await startTestServer({ agentDisconnectGraceMs: 5_000 });
    const port = Number(new URL(server.url).port);
    const client = new FleetClient({ url: server.url, apiKey: server.adminKey });
    const agent = client.agent({ name: 'credit', capabilities: ['sdk-credit'], concurrency: 1, reconnect: { minMs: 20, maxMs: 100 } });
    agent.on('error', () => {});
    let release: () => void = () => {};
    const held = new Promise<void>((resolve) => (release = resolve));
    try {
      const started = new Promise((resolve) => agent.once('task', resolve));
      await agent.work(async (task) => {
        if (task.payload === 'first') await held;
        return `done ${task.payload}`;
      });
      const first = (await client.submit({ type: 'sdk-credit', payload: 'first', leaseMs: 60_000 })).task;
      await started;
      const disconnected = once(agent, 'disconnected');
      await server.stop({ keepData: true });
      await disconnected;
      // The handler ends with no socket open: the credit its slot gives back reaches nobody, and its
      // completion is retried, further apart each time, until a server answers.
      release();
      await new Promise((resolve) => setTimeout(resolve, 2_000));
      const reconnected = new Promise((resolve) => agent.once('connected', resolve));
      server = await startTestServer({ dataDir: server.dataDir, port });
      await reconnected;
      // The welcome comes before the completion's next try: it must grant the slot all the same.
      const second = (await client.submit({ type: 'sdk-credit', payload: 'second' })).task;
      await eventually(async () => (await client.get(second.id)).status === 'completed', 15_000, 'the task submitted after the reconnect completed');
      assert.equal((await client.get(first.id)).result, 'done first');
    } finally {
      release();
      await agent.stop();
      await server.stop();
    }
  });
});
