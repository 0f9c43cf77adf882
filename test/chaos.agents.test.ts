import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { describe, it } from 'node:test';
import { FleetClient, type FleetAgent } from '../src/client/index.js';
import { eventually, fleetdBin, kill9, startTestServer, type TestServer } from './helpers.js';

type Transport = 'ws' | 'poll';

/** A real `fleetd agent` process (the demo agent: `sleep` waits payload.ms), and what it printed. */
async function startAgentProcess(server: TestServer, transport: Transport): Promise<{ child: ChildProcess; id: string; output: () => string }> {
  const args = ['agent', '--url', server.url, '--api-key', server.adminKey!, '--capabilities', 'sleep', '--concurrency', '4', '--transport', transport];
  const child = spawn(process.execPath, [fleetdBin, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout!.on('data', (d) => (output += d));
  child.stderr!.on('data', (d) => (output += d));
  let id: string | undefined;
  try {
    await eventually(() => (id = /connected to \S+ \((?:ws|poll)\) as (\S+),/.exec(output)?.[1]) !== undefined, 20_000, 'the agent to connect');
  } catch (err) {
    await kill9(child);
    throw new Error(`${(err as Error).message}; it said: ${output}`);
  }
  return { child, id: id!, output: () => output };
}

/** Counts `task.completed` per task on the server's bus: a task must complete exactly once. */
function countCompletions(server: TestServer): Map<number, number> {
  const counts = new Map<number, number>();
  server.fleet.bus.subscribe('task.completed', ({ task }) => counts.set(task.id, (counts.get(task.id) ?? 0) + 1));
  return counts;
}

/** An SDK agent in this process that finishes `sleep` tasks at once: the "elsewhere" tasks come back to. */
async function rescuer(server: TestServer, transport: Transport): Promise<FleetAgent> {
  const agent = new FleetClient({ url: server.url, apiKey: server.adminKey }).agent({ name: 'rescuer', capabilities: ['sleep'], concurrency: 4, transport });
  await agent.work(async () => ({ rescued: true }));
  return agent;
}

const leasedTo = async (server: TestServer, agentId: string) => (await server.api.get(`/v1/tasks?agentId=${agentId}&status=leased`)).body.items.length;

describe('agents killed or frozen mid-task', { timeout: 120_000 }, () => {
  for (const transport of ['ws', 'poll'] as const) {
    it(`an agent killed with SIGKILL over ${transport === 'ws' ? 'WebSocket' : 'long-poll'}: its tasks come back and complete exactly once elsewhere`, async (t) => {
      // Over WebSocket the disconnect grace brings the tasks back (their leases are long); over
      // long-poll the lease does, as nobody extends it any more.
      const leaseMs = transport === 'ws' ? 60_000 : 2_000;
      const server = await startTestServer({ agentDisconnectGraceMs: 1_000, wsPingMs: 500 });
      const completions = countCompletions(server);
      // An agent that never connects fails the test; the server stops either way.
      const agent = await startAgentProcess(server, transport).catch(async (err) => {
        await server.stop();
        throw err;
      });
      let other: FleetAgent | undefined;
      try {
        const tasks = await Promise.all(Array.from({ length: 3 }, () => server.api.submit({ type: 'sleep', payload: { ms: 600_000 }, leaseMs })));
        await eventually(async () => (await leasedTo(server, agent.id)) === tasks.length, 20_000, 'the agent to hold every task');
        const killedAt = Date.now();
        await kill9(agent.child);

        other = await rescuer(server, transport);
        for (const task of tasks) {
          await eventually(async () => (await server.api.get(`/v1/tasks/${task.id}`)).body.status === 'completed', 30_000, `task ${task.id} to complete`);
          const done = (await server.api.get(`/v1/tasks/${task.id}`)).body;
          assert.equal(done.agentId, other.id, 'completed by the other agent');
          assert.deepEqual(done.result, { rescued: true });
          assert.equal(done.attempts, 2, 'the first attempt died with the agent');
        }
        t.diagnostic(`all ${tasks.length} tasks completed elsewhere ${Date.now() - killedAt} ms after the kill`);
        assert.deepEqual([...completions.values()], tasks.map(() => 1), 'each task completed exactly once');
        if (transport === 'ws') assert.equal((await server.api.get(`/v1/agents/${agent.id}`)).body.status, 'offline');
      } finally {
        await kill9(agent.child);
        await other?.stop();
        await server.stop();
      }
    });

    it(`an agent frozen with SIGSTOP over ${transport === 'ws' ? 'WebSocket' : 'long-poll'}, its connection open: its task is re-leased; on SIGCONT its late completion gets a 409 and it carries on`, async (t) => {
      const leaseMs = transport === 'ws' ? 60_000 : 2_000;
      const server = await startTestServer({ agentDisconnectGraceMs: 1_000, wsPingMs: 500 });
      const completions = countCompletions(server);
      // An agent that never connects fails the test; the server stops either way.
      const agent = await startAgentProcess(server, transport).catch(async (err) => {
        await server.stop();
        throw err;
      });
      let other: FleetAgent | undefined;
      try {
        const task = await server.api.submit({ type: 'sleep', payload: { ms: 1_000 }, leaseMs });
        await eventually(async () => (await leasedTo(server, agent.id)) === 1, 20_000, 'the agent to hold the task');
        agent.child.kill('SIGSTOP');
        const frozenAt = Date.now();

        if (transport === 'ws') {
          // It answers no ping: the server drops the socket, and after the grace takes the agent offline.
          await eventually(async () => (await server.api.get(`/v1/agents/${agent.id}`)).body.status === 'offline', 20_000, 'the frozen agent to go offline');
        }
        await eventually(async () => (await server.api.get(`/v1/tasks/${task.id}`)).body.status === 'queued', 20_000, 'the task to return to the queue');
        t.diagnostic(`the frozen agent's task was back in the queue ${Date.now() - frozenAt} ms after SIGSTOP`);
        other = await rescuer(server, transport);
        await eventually(async () => (await server.api.get(`/v1/tasks/${task.id}`)).body.status === 'completed', 20_000, 'the task to complete elsewhere');
        await other.stop();

        agent.child.kill('SIGCONT');
        // Its handler's timer and its next extension are long past due: the server refuses whichever
        // comes first, as the lease is no longer the agent's, and nothing it says changes the task.
        await eventually(() => agent.output().includes('FLEETD_ERR_LEASE_LOST'), 20_000, `the late completion to be refused; the agent said: ${agent.output()}`);
        const done = (await server.api.get(`/v1/tasks/${task.id}`)).body;
        assert.equal(done.agentId, other.id);
        assert.deepEqual(done.result, { rescued: true }, 'the refused completion changed nothing');
        assert.equal(completions.get(task.id), 1);
        // The frozen agent's waiting long-poll ended when its lease expired: it took the task no second time.
        assert.equal(done.attempts, 2);

        // It carries on: the next task is its own to finish.
        const next = await server.api.submit({ type: 'sleep', payload: { ms: 10 } });
        await eventually(async () => (await server.api.get(`/v1/tasks/${next.id}`)).body.status === 'completed', 30_000, 'the thawed agent to complete a new task');
        assert.equal((await server.api.get(`/v1/tasks/${next.id}`)).body.agentId, agent.id);
        assert.equal((await server.api.get(`/v1/agents/${agent.id}`)).body.status, 'online');
      } finally {
        agent.child.kill('SIGCONT');
        await kill9(agent.child);
        await other?.stop();
        await server.stop();
      }
    });
  }
});
