import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { rmSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { type Api, eventually, kill9, startFleetdProcess, tempDir } from './helpers.js';
import { clusterEnv, startNode, type NodeProcess } from './cluster/node-process.js';
import { dropSchema, } from './store/postgres.js';

type Line = { event: string; at: number; id?: number; attempts?: number; code?: string; reason?: string; name?: string; message?: string; agentId?: string };

/** The agent process of test/fixtures/cancellable-agent.ts, and what it said. */
class AgentProcess {
  readonly lines: Line[] = [];
  private constructor(readonly child: ChildProcess) {
    let buffered = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      buffered += chunk.toString();
      let newline: number;
      while ((newline = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        try {
          this.lines.push(JSON.parse(line));
        } catch {
          // not one of the fixture's lines
        }
      }
    });
  }

  static async start(url: string, apiKey: string, env: { CAPABILITY: string; TRANSPORT: 'ws' | 'poll'; LATE_MS?: string }): Promise<AgentProcess> {
    const child = spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/cancellable-agent.ts'], {
      env: { ...process.env, FLEETD_URL: url, FLEETD_API_KEY: apiKey, ...env },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const agent = new AgentProcess(child);
    await agent.next((l) => l.event === 'connected', 60_000);
    return agent;
  }

  get id(): string {
    return this.lines.find((l) => l.event === 'connected')!.agentId!;
  }

  /** The first line that matches, waiting for it. */
  async next(match: (line: Line) => boolean, timeoutMs = 20_000): Promise<Line> {
    let found: Line | undefined;
    await eventually(() => (found = this.lines.find(match)) !== undefined, timeoutMs, 'the agent process to say so');
    return found!;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = once(this.child, 'exit');
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => void kill9(this.child), 10_000);
    await exited;
    clearTimeout(timer);
  }
}

/**
 * Cancels a task that a real agent process is running, and checks what a user would: the signal
 * fired with the reason, soon; the task is cancelled with the reason; the handler's late result was
 * dropped, and one sent by hand is refused; the agent goes on to its next task.
 */
async function cancelRunningTask(t: { diagnostic(m: string): void }, submitTo: Api, cancelOn: Api, agent: AgentProcess, type: string) {
  const task = await submitTo.submit({ type, payload: { slow: true }, leaseMs: 1_000 });
  await agent.next((l) => l.event === 'started' && l.id === task.id);
  const cancel = await cancelOn.delete(`/v1/tasks/${task.id}?reason=${encodeURIComponent('the user changed their mind')}`);
  const answeredAt = Date.now();
  assert.equal(cancel.status, 200, JSON.stringify(cancel.body));
  assert.equal(cancel.body.status, 'cancelled');
  assert.deepEqual(cancel.body.error, { code: 'FLEETD_ERR_CANCELLED', message: 'the user changed their mind' });

  const aborted = await agent.next((l) => l.event === 'aborted' && l.id === task.id);
  t.diagnostic(`the handler's signal fired ${aborted.at - answeredAt} ms after the cancel's answer`);
  assert.deepEqual([aborted.name, aborted.code, aborted.reason], ['TaskRevokedError', 'FLEETD_ERR_CANCELLED', 'the user changed their mind']);

  await agent.next((l) => l.event === 'returned' && l.id === task.id);
  const late = await cancelOn.post(`/v1/tasks/${task.id}/complete`, { agentId: agent.id, result: { late: true } });
  assert.equal(late.status, 409);
  assert.equal(late.body.error.code, 'FLEETD_ERR_CANCELLED');
  assert.equal(late.body.error.details.reason, 'the user changed their mind');

  const quick = await submitTo.submit({ type, payload: { quick: true } });
  await eventually(async () => (await submitTo.get(`/v1/tasks/${quick.id}`)).body.status === 'completed', 20_000, 'the next task to be done');
  const after = (await submitTo.get(`/v1/tasks/${task.id}`)).body;
  assert.equal(after.status, 'cancelled');
  assert.equal(after.result, null, 'the late result was not stored');
  assert.deepEqual(
    agent.lines.filter((l) => l.event === 'error'),
    [],
    'the agent dropped its late result quietly',
  );
  return aborted.at - answeredAt;
}

describe('control of running work on one fleetd process (SQLite)', { timeout: 180_000 }, () => {
  const dataDir = tempDir();
  let server: Awaited<ReturnType<typeof startFleetdProcess>>;
  let url: string;
  const agents: AgentProcess[] = [];

  before(async () => {
    server = await startFleetdProcess(dataDir);
    url = server.api.base;
  });
  after(async () => {
    await Promise.all(agents.map((a) => a.stop()));
    await kill9(server.child);
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('tells a long-poll agent of a cancel in the answer to its next extension', async (t) => {
    const agent = await AgentProcess.start(url, server.adminKey, { CAPABILITY: 'poll-cancel', TRANSPORT: 'poll' });
    agents.push(agent);
    const ms = await cancelRunningTask(t, server.api, server.api, agent, 'poll-cancel');
    // Extensions come every leaseMs / 2 = 500 ms; the bound is generous for a loaded machine.
    assert.ok(ms < 10_000, `learned of the cancel ${ms} ms after it`);
  });

  it('cancels over WebSocket too, and a second cancel or a cancel of a finished task is refused with its state', async (t) => {
    const agent = await AgentProcess.start(url, server.adminKey, { CAPABILITY: 'ws-cancel', TRANSPORT: 'ws' });
    agents.push(agent);
    const ms = await cancelRunningTask(t, server.api, server.api, agent, 'ws-cancel');
    assert.ok(ms < 5_000, `the signal fired ${ms} ms after the cancel`);
    const done = (await server.api.get('/v1/tasks?type=ws-cancel&status=cancelled')).body.items[0];
    const again = await server.api.delete(`/v1/tasks/${done.id}?reason=twice`);
    assert.equal(again.status, 409);
    assert.deepEqual([again.body.error.code, again.body.error.details.status], ['FLEETD_ERR_TASK_STATE', 'cancelled']);
    assert.equal((await server.api.get(`/v1/tasks/${done.id}`)).body.error.message, 'the user changed their mind', 'the first reason stays');
  });

  it('ends an attempt that runs past executionTimeoutMs while the SDK keeps extending, retries it, then buries it', async () => {
    const agent = await AgentProcess.start(url, server.adminKey, { CAPABILITY: 'hangs', TRANSPORT: 'ws', LATE_MS: '50' });
    agents.push(agent);
    const task = await server.api.submit({ type: 'hangs', leaseMs: 300, executionTimeoutMs: 1_500, maxAttempts: 2, backoffMs: 50 });
    assert.equal(task.executionTimeoutMs, 1_500);
    const first = await agent.next((l) => l.event === 'started' && l.id === task.id);
    const timedOut = await agent.next((l) => l.event === 'aborted' && l.id === task.id);
    assert.deepEqual([timedOut.code, timedOut.reason], ['FLEETD_ERR_TIMEOUT', 'the attempt ran past its execution timeout of 1500 ms']);
    // The lease was 300 ms: only the SDK's extensions kept the attempt alive until its timeout.
    assert.ok(timedOut.at - first.at >= 1_400, `the attempt ran ${timedOut.at - first.at} ms`);
    await agent.next((l) => l.event === 'started' && l.id === task.id && l.attempts === 2, 30_000);
    await eventually(async () => (await server.api.get(`/v1/tasks/${task.id}`)).body.status === 'dead', 30_000, 'the task to be dead');
    const dead = (await server.api.get(`/v1/tasks/${task.id}`)).body;
    assert.equal(dead.attempts, 2);
    assert.equal(dead.error.code, 'FLEETD_ERR_TIMEOUT');
    assert.equal(agent.lines.filter((l) => l.event === 'aborted' && l.id === task.id && l.code === 'FLEETD_ERR_TIMEOUT').length, 2);
    assert.deepEqual(agent.lines.filter((l) => l.event === 'error'), []);
  });

  it('sends a task nobody claims within scheduleTimeoutMs to dead, and never hands it out', async () => {
    const agent = await server.api.registerAgent(['unserved']);
    const expiring = await server.api.submit({ type: 'unserved', scheduleTimeoutMs: 300 });
    const delayed = await server.api.submit({ type: 'unserved', scheduleTimeoutMs: 300, delayMs: 60_000 });
    assert.equal(expiring.scheduleTimeoutMs, 300);
    await eventually(async () => (await server.api.get(`/v1/tasks/${expiring.id}`)).body.status === 'dead', 20_000, 'the task to expire');
    const dead = (await server.api.get(`/v1/tasks/${expiring.id}`)).body;
    assert.equal(dead.error.code, 'FLEETD_ERR_EXPIRED');
    assert.equal(dead.attempts, 0, 'nobody ever received it');
    assert.deepEqual(await server.api.claim(agent.id, 5, 0), [], 'the delayed one waits for its runAt');
    assert.equal((await server.api.get(`/v1/tasks/${delayed.id}`)).body.status, 'scheduled', 'its timeout counts from its runAt');
    const inTime = await server.api.submit({ type: 'unserved', scheduleTimeoutMs: 60_000 });
    const [claimed] = await server.api.claim(agent.id, 1, 0);
    assert.equal(claimed.id, inTime.id);
  });

  it('refuses bad cancels and timeouts with a clear error, changing nothing', async () => {
    const task = await server.api.submit({ type: 'bad-input' });
    const before = (await server.api.get('/v1/tasks?type=bad-input')).body.items;
    const cases: [string, Promise<{ status: number; body: any }>, number, string][] = [
      ['empty reason', server.api.delete(`/v1/tasks/${task.id}?reason=`), 400, 'FLEETD_ERR_VALIDATION'],
      ['reason too long', server.api.delete(`/v1/tasks/${task.id}?reason=${'x'.repeat(501)}`), 400, 'FLEETD_ERR_VALIDATION'],
      ['unknown parameter', server.api.delete(`/v1/tasks/${task.id}?why=because`), 400, 'FLEETD_ERR_VALIDATION'],
      ['no such task', server.api.delete('/v1/tasks/987654?reason=gone'), 404, 'FLEETD_ERR_NOT_FOUND'],
      ['timeout too short', server.api.post('/v1/tasks', { type: 'bad-input', executionTimeoutMs: 5 }), 400, 'FLEETD_ERR_VALIDATION'],
      ['timeout not a number', server.api.post('/v1/tasks', { type: 'bad-input', executionTimeoutMs: '1m' }), 400, 'FLEETD_ERR_VALIDATION'],
      ['schedule timeout of 0', server.api.post('/v1/tasks', { type: 'bad-input', scheduleTimeoutMs: 0 }), 400, 'FLEETD_ERR_VALIDATION'],
      ['negative schedule timeout', server.api.post('/v1/tasks', { type: 'bad-input', scheduleTimeoutMs: -1 }), 400, 'FLEETD_ERR_VALIDATION'],
    ];
    for (const [what, reply, status, code] of cases) {
      const { status: got, body } = await reply;
      assert.equal(got, status, `${what}: ${JSON.stringify(body)}`);
      assert.equal(body.error.code, code, what);
      assert.equal(typeof body.error.message, 'string', what);
    }
    assert.deepEqual((await server.api.get('/v1/tasks?type=bad-input')).body.items, before, 'nothing changed');
  });
});

describe('cancel across two fleetd nodes on PostgreSQL and Redis', { timeout: 180_000 }, () => {
  const env = clusterEnv();
  let a: NodeProcess;
  let b: NodeProcess;
  let agent: AgentProcess | undefined;

  before(async () => {
    a = await startNode(env);
    b = await startNode(env);
  });
  after(async () => {
    await agent?.stop();
    await Promise.all([a?.stop(), b?.stop()]);
    await dropSchema(env.FLEETD_DATABASE_SCHEMA);
  });

  it('tells an agent whose socket is on node A at once of a cancel made on node B', async (t) => {
    agent = await AgentProcess.start(a.url, env.FLEETD_ADMIN_KEY, { CAPABILITY: 'cluster-cancel', TRANSPORT: 'ws' });
    // The lease is 1 s, extended every 500 ms: a signal within that came by the socket, not an extension's answer.
    const ms = await cancelRunningTask(t, a.api, b.api, agent, 'cluster-cancel');
    assert.ok(ms < 5_000, `the signal fired ${ms} ms after the cancel`);
  });

  it('answers a wait on node B as soon as an agent on node A completes the task', async () => {
    assert.ok(agent, 'the agent of the test before');
    // Submitted on A and held back until B waits: the agent on A does it at once.
    const task = await a.api.submit({ type: 'cluster-cancel', payload: { quick: true }, delayMs: 1_000 });
    const started = Date.now();
    const waited = await b.api.get(`/v1/tasks/${task.id}?waitMs=25000`);
    assert.equal(waited.status, 200);
    assert.deepEqual([waited.body.status, waited.body.result], ['completed', { quick: true }]);
    assert.ok(Date.now() - started < 20_000, `answered after ${Date.now() - started} ms, not at the wait's end`);
  });
});
