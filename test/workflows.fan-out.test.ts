import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { describe, it } from 'node:test';
import { FleetClient, type TaskJson } from '../src/client/index.js';
import { drivers, eventually, kill9, startTestServer, stopAndDrop } from './helpers.js';

const CHILDREN = 1_000;

/** The planner agent as a process of its own (test/fixtures/planner-agent.ts); resolves once it works. */
async function startPlanner(url: string, apiKey: string, hang: boolean): Promise<{ child: ChildProcess; output: () => string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/planner-agent.ts'], {
    env: { ...process.env, FLEETD_URL: url, FLEETD_API_KEY: apiKey, CHILDREN: String(CHILDREN), HANG: hang ? '1' : '0' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let output = '';
  child.stdout!.on('data', (d) => (output += d));
  try {
    await eventually(() => output.includes('ready') || child.exitCode !== null, 60_000, 'the planner to be ready');
    assert.equal(child.exitCode, null, `the planner exited: ${output}`);
  } catch (err) {
    // Not yet the caller's to kill: left running, its pipe would keep the test file's process alive.
    await kill9(child);
    throw err;
  }
  return { child, output: () => output };
}

for (const [driver, store] of Object.entries(drivers)) {
  describe(`fan-out and join with the planner killed (${driver})`, { timeout: 300_000 }, () => {
    it(`spawns ${CHILDREN} children and a join; after SIGKILL of the planner nothing is lost and the join runs once`, async (t) => {
      const config = store();
      // A planner whose socket dropped is taken offline (its plan task re-queued) 300 ms later.
      const server = await startTestServer({ ...config, agentDisconnectGraceMs: 300 });
      const client = new FleetClient({ url: server.url, apiKey: server.adminKey });
      const worker = client.agent({ name: 'worker', capabilities: ['leaf', 'join'], concurrency: 50 });
      const planners: ChildProcess[] = [];
      const leafRuns = new Map<number, number>();
      const joinRuns: TaskJson[] = [];
      try {
        await worker.work(async (task) => {
          if (task.type === 'leaf') {
            leafRuns.set(task.id, (leafRuns.get(task.id) ?? 0) + 1);
            const { i } = task.payload as { i: number };
            return { square: i * i };
          }
          joinRuns.push(task);
          return { sum: (task.dependencies ?? []).reduce((s, d) => s + (d.result as { square: number }).square, 0) };
        });
        const plan = (await client.submit({ type: 'plan', leaseMs: 5_000 })).task;

        const first = await startPlanner(server.url, server.adminKey!, true);
        planners.push(first.child);
        await eventually(() => first.output().includes('spawned'), 120_000, 'the first planner to spawn');
        await kill9(first.child);
        t.diagnostic(`first planner: ${first.output().trim().split('\n').pop()}`);

        const second = await startPlanner(server.url, server.adminKey!, false);
        planners.push(second.child);
        await eventually(async () => (await client.get(plan.id)).status === 'completed', 120_000, 'the plan to complete on its second attempt');
        const done = await client.get(plan.id);
        assert.equal(done.attempts, 2, 'the killed planner spent one attempt, the second planner finished it');
        const joinId = (done.result as { join: number }).join;
        await eventually(async () => (await client.get(joinId)).status === 'completed', 120_000, 'the join to complete');

        // Nothing lost, nothing twice: one set of children, one join, every leaf done.
        const children: TaskJson[] = [];
        let cursor: string | null = null;
        do {
          const page: { items: TaskJson[]; nextCursor: string | null } = await client.request(
            'GET',
            `/v1/tasks/${plan.id}/children?limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`,
          );
          children.push(...page.items);
          cursor = page.nextCursor;
        } while (cursor);
        assert.equal(children.filter((c) => c.type === 'leaf').length, CHILDREN, 'the second planner got the first one\'s children back');
        assert.deepEqual(children.filter((c) => c.type === 'join').map((c) => c.id), [joinId]);
        assert.ok(children.every((c) => c.status === 'completed'));
        assert.equal((await client.list({ type: 'join' })).items.length, 1);
        assert.equal(leafRuns.size, CHILDREN);
        assert.equal(joinRuns.length, 1, 'the join ran once');
        const [join] = joinRuns;
        assert.equal(join.dependencies?.length, CHILDREN);
        assert.ok(join.dependencies?.every((d) => d.status === 'completed'));
        const expected = Array.from({ length: CHILDREN }, (_, i) => i * i).reduce((a, b) => a + b, 0);
        assert.deepEqual((await client.get(joinId)).result, { sum: expected });
        const stats = await client.stats();
        assert.equal(stats.tasks.byStatus.dead, 0);
        assert.equal(stats.tasks.byStatus.waiting, 0);
      } finally {
        for (const child of planners) await kill9(child);
        await worker.stop();
        await stopAndDrop(server);
      }
    });
  });
}
