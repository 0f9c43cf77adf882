import assert from 'node:assert/strict';
import { after, before, describe, it, type TestContext } from 'node:test';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { rmSync, writeFileSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import { join } from 'node:path';
import { FleetClient } from '../src/client/index.js';
import { FakeLlm, finishedRun } from './fake-llm.js';
import { eventually, startTogether, tempDir } from './helpers.js';
import { startHttpProxy } from './http-proxy.js';
import { logLines, metric, ResilienceCluster } from './resilience/cluster.js';
import { ThrowawayPostgres, ThrowawayRedis } from './resilience/services.js';
import type { FaultReport } from './resilience/workload.js';

/**
 * PostgreSQL restarted, crashed and its backends terminated under two fleetd nodes at work, on a
 * PostgreSQL and a Redis of the test's own. The same two node processes live through every fault.
 */
describe('two nodes survive PostgreSQL going away', { timeout: 300_000 }, () => {
  let db: ThrowawayPostgres;
  let redis: ThrowawayRedis;
  let cluster: ResilienceCluster;
  const reports: FaultReport[] = [];
  const fake = new FakeLlm();
  const dir = tempDir();

  before(async () => {
    await fake.start();
    const pipelines = join(dir, 'pipelines.json');
    writeFileSync(
      pipelines,
      JSON.stringify({
        providers: [{ name: 'fake', kind: 'openai', baseUrl: fake.url, limits: { retries: 0 } }],
        pipelines: [
          {
            name: 'survive',
            steps: [
              { name: 'a', kind: 'llm', provider: 'fake', prompt: 'SURVIVE-A {{input.text}}' },
              { name: 'b', kind: 'llm', provider: 'fake', prompt: 'SURVIVE-B {{steps.a}}' },
            ],
          },
        ],
      }),
    );
    [db, redis] = await startTogether({ start: ThrowawayPostgres.create(), stop: (d) => d.destroy() }, { start: ThrowawayRedis.create(), stop: (r) => r.destroy() });
    cluster = new ResilienceCluster(
      db.url,
      redis.url,
      async (schema, ids) =>
        (await db.query<{ id: number }>(`SELECT id FROM ${schema}.tasks WHERE id = ANY($1::bigint[]) AND status = 'completed'`, [ids])).map((r) => Number(r.id)),
      // Leases renewed every second, so that runs are taken up again soon after the database returns.
      { FLEETD_PIPELINES_FILE: pipelines, FLEETD_PIPELINE_RUN_LEASE_MS: '3000' },
    );
    await cluster.start();
  });
  after(async () => {
    try {
      await cluster?.close();
    } finally {
      await Promise.all([db?.destroy(), redis?.destroy(), fake.stop()]);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  /** Outage warnings each node logged so far, and recoveries. */
  const outageLogs = () =>
    cluster.nodes.map((n) => ({
      down: logLines(n, /^postgres is unavailable/).length,
      up: logLines(n, /^postgres is available again/).length,
    }));

  /** Runs the fault under the workload; afterwards each node logged at most one outage, and its end. */
  async function fault(t: TestContext, name: string, run: () => Promise<void>): Promise<void> {
    const before = outageLogs();
    reports.push(await cluster.workload.survive(t, name, run));
    await eventually(() => outageLogs().every((n, i) => n.up - before[i].up === n.down - before[i].down), 5_000, 'each outage logged with its end');
    for (const [i, n] of outageLogs().entries()) assert.ok(n.down - before[i].down <= 1, `node ${i} logged one line per outage, not per request`);
    cluster.checkNodes();
    t.diagnostic(`${name}: a task submitted on node 0 reached the agent on node 1 in ${await cluster.wakeAcross()} ms`);
  }

  it('a fast restart (pg_ctl restart -m fast)', async (t) => {
    await fault(t, 'restart -m fast', () => db.restart('fast'));
  });

  it('an immediate restart (pg_ctl restart -m immediate: crash recovery at start)', async (t) => {
    await fault(t, 'restart -m immediate', () => db.restart('immediate'));
  });

  it('kill -9 of the postmaster: 503 with Retry-After while it is down, /readyz not ready, /healthz up, then crash recovery', async (t) => {
    await fault(t, 'kill -9 postmaster', async () => {
      await db.kill9();
      const [node] = cluster.nodes;
      await eventually(async () => (await metric(node, 'fleetd_dependency_up{dependency="postgres"}')) === 0, 10_000, 'fleetd_dependency_up says postgres is down');
      const ready = await node.api.get('/readyz');
      assert.equal(ready.status, 503);
      assert.equal(ready.body.error.code, 'FLEETD_ERR_UNAVAILABLE');
      assert.ok(Number(ready.headers.get('retry-after')) >= 1);
      assert.equal(ready.body.error.details.dependencies.postgres.up, false);
      assert.equal((await node.api.get('/healthz')).status, 200);
      const submit = await node.api.post('/v1/tasks', { type: 'refused' });
      assert.equal(submit.status, 503);
      assert.equal(submit.body.error.code, 'FLEETD_ERR_UNAVAILABLE');
      await db.recover();
    });
    const [node] = cluster.nodes;
    await eventually(async () => (await node.api.get('/readyz')).status === 200, 5_000, '/readyz ready again');
    assert.equal(await metric(node, 'fleetd_dependency_up{dependency="postgres"}'), 1);
    assert.ok((await metric(node, 'fleetd_dependency_reconnects_total{dependency="postgres"}'))! >= 1);
  });

  it('stopped for 10 s, as a managed failover takes: agents hold their results until it is back', async (t) => {
    await fault(t, 'stopped 10 s', async () => {
      await db.stop('fast');
      await new Promise((r) => setTimeout(r, 10_000));
      await db.start();
    });
  });

  it('pipeline steps that finish while it is down pause their runs, which resume and complete once it is back', async (t) => {
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const RUNS = 5;
    fake.when('SURVIVE-B', ...Array.from({ length: RUNS }, () => ({ hold: held })));
    const ids: number[] = [];
    for (let i = 0; i < RUNS; i++) ids.push((await cluster.nodes[0].api.post('/v1/pipelines/survive/runs', { input: { text: `run ${i}` } })).body.run.id);
    await fake.nextRequest('SURVIVE-B', RUNS);
    await fault(t, 'stopped while pipeline steps finish', async () => {
      await db.stop('fast');
      release();
      // The steps' answers arrive meanwhile and cannot be recorded; nothing outside the node can see
      // that happen (it is silent by design), so the database simply stays away a second longer.
      await new Promise((r) => setTimeout(r, 1_000));
      await db.start();
    });
    for (const id of ids) assert.equal((await finishedRun(cluster.nodes[1].api, id, 30_000)).status, 'completed');
    assert.equal(fake.seen('SURVIVE-A').length, RUNS, 'a step recorded before the outage never ran again');
    t.diagnostic(`step b ran ${fake.seen('SURVIVE-B').length} times for ${RUNS} runs: once more for each answer that could not be recorded`);
  });

  it("pg_terminate_backend of each of fleetd's backends in turn, the LISTEN ones included", async (t) => {
    await fault(t, 'terminate every backend', async () => {
      const backends = await db.query<{ pid: number; application_name: string }>(
        "SELECT pid, application_name FROM pg_stat_activity WHERE application_name LIKE 'fleetd-%' ORDER BY pid",
      );
      assert.ok(backends.some((b) => b.application_name.endsWith('-listen')), 'the LISTEN connections are among them');
      for (const backend of backends) {
        const accepted = cluster.workload.answers.filter((a) => a.status === 201).length;
        await db.query('SELECT pg_terminate_backend($1)', [backend.pid]);
        await eventually(() => cluster.workload.answers.filter((a) => a.status === 201).length > accepted + 2, 10_000, `submits after terminating ${backend.application_name}`);
      }
      t.diagnostic(`${backends.length} backends terminated one by one`);
    });
  });

  it("a TCP cut of every connection between node 0 and PostgreSQL", async (t) => {
    await fault(t, 'TCP cut to PostgreSQL', async () => {
      const cut = cluster.postgresProxy.cutAll();
      t.diagnostic(`${cut} connections cut`);
    });
  });

  it("a TCP cut of a claim's answer on its way back: the tasks the claim leased reach the agent all the same", async (t) => {
    await fault(t, 'TCP cut of a claim answer', async () => {
      // PostgreSQL ran the claim to its commit; the answer naming the tasks it leased is cut halfway.
      // Leases last 60 s, so only the node's own recovery gets them done within the 30 s allowed.
      await cluster.postgresProxy.cutWhen('to-client', (chunk) => /leased_tasks\\*" : \[\{/.test(chunk.toString('latin1')));
    });
  });

  /**
   * Submits an echo task on the second node, and cuts the answer to the claim that leases it on its
   * way back to the first node, where the agent long-polls (woken through Redis): its id, once cut.
   */
  async function submitCuttingItsClaim(): Promise<number> {
    const marker = `cut-${randomUUID()}`;
    const cut = cluster.postgresProxy.cutWhen('to-client', (chunk) => {
      const text = chunk.toString('latin1');
      return text.includes('leased_tasks') && text.includes(marker);
    });
    const { body } = await cluster.nodes[1].api.post('/v1/tasks', { type: 'echo', payload: { marker }, leaseMs: 60_000 });
    await cut;
    return body.task.id;
  }

  /** A long-poll agent of both nodes, started on their URLs, and the runs of each task it has made. */
  type Poller = (urls: string[]) => Promise<{ runs: (id: number) => number; stop: () => Promise<void> }>;

  /**
   * A long-poll agent of both nodes (TypeScript or Python SDK) long-polls the first: the answer to its
   * claim, naming the task it leased, is cut. The first node answers the claim 503, outcome unknown,
   * and the agent fails over to the second, which knows nothing of that claim: only the agent's own
   * look at its leases finds the task within its lease, and it runs once.
   */
  async function cutLongPollClaim(start: Poller): Promise<void> {
    const [first, second] = cluster.nodes;
    const agent = await start([first.url, second.url]);
    try {
      const id = await submitCuttingItsClaim();
      await eventually(async () => (await second.api.get(`/v1/tasks/${id}`)).body.status === 'completed', 20_000, 'the task completed');
      assert.equal(agent.runs(id), 1, 'it ran once');
    } finally {
      await agent.stop();
    }
  }

  /**
   * As above, and then the agent comes back to the first node while the task's outcome is on its
   * way: that node, which knows nothing of the second's hand-over, hands the lost claim's task over
   * again, the same lease. The agent has room (concurrency 2) and the handler is done; it must not
   * run the task again. Between the agent and each node, an HTTP proxy: the first node's passes the
   * claims' answers on and notes them, the second's refuses claims (503, so that the agent goes
   * back), and both hold the task's completion until the first node has handed the task again.
   */
  async function handedAgainWhileReporting(start: Poller): Promise<void> {
    const [first, second] = cluster.nodes;
    let letCompletionsThrough!: () => void;
    const completionsHeld = new Promise<void>((resolve) => (letCompletionsThrough = resolve));
    const holdCompletions = (req: IncomingMessage) => (/^\/v1\/tasks\/(\d+\/)?complete/.test(req.url ?? '') ? completionsHeld : undefined);
    // The first node's claims, each noted as it goes out and as its answer comes back, in order.
    const claimsAtFirst: { answer?: string }[] = [];
    const toFirst = await startHttpProxy(first.url, {
      hold: (req) => {
        if (req.url === '/v1/tasks/claim') claimsAtFirst.push({});
        return holdCompletions(req);
      },
      onBody: (req, body) => {
        if (req.url === '/v1/tasks/claim') claimsAtFirst.find((c) => c.answer === undefined)!.answer = body;
      },
    });
    const toSecond = await startHttpProxy(second.url, {
      hold: holdCompletions,
      answer: (req) => (req.url === '/v1/tasks/claim' ? [503, { error: { code: 'FLEETD_ERR_UNAVAILABLE', message: 'this node takes no claims now', details: {} } }] : undefined),
    });
    try {
      const agent = await start([toFirst.url, toSecond.url]);
      try {
        const id = await submitCuttingItsClaim();
        await eventually(() => agent.runs(id) === 1, 20_000, 'the agent took the task back from the second node and ran it');
        // The first node hands the same lease again on the agent's next claim there. The lost claim's
        // own answer was a 503, so any answer of the first node naming the task is that hand-over,
        // whether it came before the test saw the run or after (it had counted only those after, and
        // missed one that came within its 20 ms poll).
        const handedAgain = () => claimsAtFirst.findIndex((c) => c.answer?.includes(`"id":${id},`));
        await eventually(() => handedAgain() >= 0, 20_000, 'the first node handed the lost claim over again');
        // The agent's next claim goes out once it has dealt with that answer; then time for a run to show.
        await eventually(() => claimsAtFirst.length > handedAgain() + 1, 20_000, "the agent's next claim");
        await new Promise((r) => setTimeout(r, 500));
        letCompletionsThrough();
        await eventually(async () => (await second.api.get(`/v1/tasks/${id}`)).body.status === 'completed', 20_000, 'the task completed');
        assert.equal(agent.runs(id), 1, 'it ran once');
      } finally {
        letCompletionsThrough();
        await agent.stop();
      }
    } finally {
      await Promise.all([toFirst.stop(), toSecond.stop()]);
    }
  }

  /** A long-poll agent of the TypeScript SDK for both nodes, counting the runs of each task. */
  const typescriptPoller =
    (concurrency: number): Poller =>
    async (urls) => {
      const runs = new Map<number, number>();
      const agent = new FleetClient({ urls, apiKey: cluster.adminKey }).agent({ name: 'ts-poller', capabilities: ['echo'], concurrency, transport: 'poll' });
      agent.on('error', () => {});
      await agent.work((task) => {
        runs.set(task.id, (runs.get(task.id) ?? 0) + 1);
        return task.payload;
      });
      return { runs: (id) => runs.get(id) ?? 0, stop: () => agent.stop({ timeoutMs: 1_000 }) };
    };

  /** A long-poll agent of the Python SDK for both nodes (its demo agent, which prints each task it runs). */
  const pythonPoller =
    (concurrency: number): Poller =>
    async (urls) => {
      const child = spawn(
        '/usr/bin/python3',
        ['-m', 'fleetd.agent', '--url', urls.join(','), '--capabilities', 'echo', '--concurrency', String(concurrency), '--transport', 'poll', '--name', 'py-poller'],
        { cwd: join(import.meta.dirname, '..', 'clients', 'python'), env: { ...process.env, FLEETD_API_KEY: cluster.adminKey }, stdio: ['ignore', 'pipe', 'pipe'] },
      );
      let output = '';
      child.stdout.on('data', (d) => (output += d));
      child.stderr.on('data', (d) => (output += d));
      const stop = async () => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        const exited = once(child, 'exit');
        child.kill('SIGKILL');
        await exited;
      };
      try {
        await eventually(() => output.includes('connected to'), 20_000, `the Python agent connected: ${output}`);
      } catch (err) {
        await stop();
        throw err;
      }
      return { runs: (id) => output.split('\n').filter((line) => line.includes(`task ${id} echo`)).length, stop };
    };

  it("a long-poll agent of the TypeScript SDK whose claim's answer is cut takes its task back from the other node", async () => {
    await cutLongPollClaim(typescriptPoller(1));
  });

  it("a long-poll agent of the Python SDK whose claim's answer is cut takes its task back from the other node", async () => {
    await cutLongPollClaim(pythonPoller(1));
  });

  it('a long-poll agent of the TypeScript SDK handed the same lease again by the first node, its outcome on its way, runs it once', async () => {
    await handedAgainWhileReporting(typescriptPoller(2));
  });

  it('a long-poll agent of the Python SDK handed the same lease again by the first node, its outcome on its way, runs it once', async () => {
    await handedAgainWhileReporting(pythonPoller(2));
  });

  it('no request was answered 500 on either node', async (t) => {
    assert.equal(await cluster.answered('500'), 0);
    t.diagnostic(JSON.stringify(reports));
  });
});
