/**
 * `npm run bench -- wake [--tasks 400] [--rate 20] [--agents 10]`
 *
 * Cross-node wake-up: two nodes on PostgreSQL + Redis (FLEETD_BENCH_DATABASE_URL, a schema of its
 * own; FLEETD_BENCH_REDIS_URL). `--agents` agents long-poll node A for one task at a time, so that
 * one is always waiting; tasks are submitted one at a time at `--rate`, alternately to node A (the
 * same node: the baseline, in the same run) and to node B (the wake-up crosses from B's commit to
 * A's waiting claim). A task's latency runs from the moment its submit is sent to the moment an
 * agent's claim answer carrying it arrives, both timed in this process. The load is light on
 * purpose: what is measured is the wake-up's path, not a queue.
 */
import { randomBytes } from 'node:crypto';
import { BENCH_DATABASE_URL, BENCH_REDIS_URL, dropSchemas, flags, percentile, report, startServerProcess, type Row, type ServerProcess } from '../lib.js';
import { Client } from '../load.js';


export default async function wake(args: string[]): Promise<void> {
  const f = flags(args, { tasks: 400, rate: 20, agents: 10 });
  const schema = `fleetd_bench_wake_${randomBytes(4).toString('hex')}`;
  const env = { FLEETD_DATABASE_URL: BENCH_DATABASE_URL, FLEETD_DATABASE_SCHEMA: schema, FLEETD_REDIS_URL: BENCH_REDIS_URL, FLEETD_REDIS_PREFIX: `${schema}:` };
  const nodes: ServerProcess[] = [];
  const clients: Client[] = [];
  let stopping = false;
  let polls: Promise<void>[] = [];
  try {
    // The first node migrates; the second finds the schema ready.
    for (let i = 0; i < 2; i++) nodes.push(await startServerProcess(env));
    const [a, b] = nodes.map((n) => new Client(n.url, f.agents + 8));
    clients.push(a, b);
    const type = 'wake-bench';
    // By task id; a claim's answer may arrive before its submit's, so both are matched at the end.
    const sentAt = new Map<number, { at: number; cross: boolean }>();
    const claimedAt = new Map<number, number>();

    const agents = await Promise.all(
      Array.from({ length: f.agents }, async (_, k) => (await a.call('POST', '/v1/agents', { name: `wake-${k}`, capabilities: [type] })).body.agent.id as string),
    );
    polls = agents.map(async (agentId) => {
      while (!stopping) {
        const res = await a.call('POST', '/v1/tasks/claim', { agentId, max: 1, waitMs: 5_000 });
        const at = performance.now();
        if (res.status !== 200) throw new Error(`claim answered ${res.status}: ${JSON.stringify(res.body)}`);
        for (const task of res.body.tasks as { id: number }[]) {
          claimedAt.set(task.id, at);
          await a.call('POST', `/v1/tasks/${task.id}/complete`, { agentId, result: null });
        }
      }
    });
    // Every agent is waiting before the first submit.
    await new Promise((r) => setTimeout(r, 500));

    process.stdout.write(`\n— ${f.tasks} tasks at ${f.rate}/s, ${f.agents} agents long-polling node A, submits alternating between node A and node B —\n`);
    for (let i = 0; i < f.tasks; i++) {
      const cross = i % 2 === 1;
      const started = performance.now();
      const res = await (cross ? b : a).call('POST', '/v1/tasks', { type, payload: { i } });
      if (res.status !== 201) throw new Error(`submit answered ${res.status}: ${JSON.stringify(res.body)}`);
      sentAt.set(res.body.task.id as number, { at: started, cross });
      await new Promise((r) => setTimeout(r, Math.max(0, 1_000 / f.rate - (performance.now() - started))));
    }
    await new Promise((r) => setTimeout(r, 1_000));
    stopping = true;
    await Promise.all(polls);
    const latency = { same: [] as number[], cross: [] as number[] };
    for (const [id, sent] of sentAt) {
      const claimed = claimedAt.get(id);
      if (claimed === undefined) throw new Error(`task ${id} was never claimed`);
      (sent.cross ? latency.cross : latency.same).push(claimed - sent.at);
    }

    const row = (name: string, xs: number[]): Row => ({
      submit: name,
      tasks: xs.length,
      p50_ms: percentile(xs, 50),
      p95_ms: percentile(xs, 95),
      p99_ms: percentile(xs, 99),
      max_ms: Math.max(...xs),
    });
    report('wake', [row('node A (same node)', latency.same), row('node B (wake-up crosses nodes)', latency.cross)], { flags: f });
  } finally {
    stopping = true;
    // Each long-poll answers within its wait.
    await Promise.allSettled(polls);
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all(nodes.map((n) => n.stop()));
    await dropSchemas([schema]);
  }
}
