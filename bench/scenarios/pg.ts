/**
 * pg: the `saturate` end-to-end load and the `ws` push load on embedded SQLite (one node), on
 * PostgreSQL with one node, and on PostgreSQL + Redis with two nodes, in the same run on the same
 * machine.
 *
 *   npm run bench -- pg [--seconds 10] [--agents 50] [--ws-agents 200] [--rate 1000] [--ws-seconds 5] [--pin 0] [--rounds 1] [--idle-node 0]
 *
 * Each configuration gets fresh state: a new data dir for SQLite, a new schema and Redis prefix for
 * PostgreSQL. With two nodes, agents and submitters alternate between them, as behind a load
 * balancer. The end-to-end load is driven from this process; besides tasks/s it reports the CPU
 * time each task cost in the fleetd node(s), in the PostgreSQL backends serving them and in this
 * load generator: on one machine, their sum bounds the throughput whatever the number of nodes.
 * Per node, the same for each node and the backends serving it.
 *
 * With `--rounds N` each load runs N times on each configuration, the configurations taking turns,
 * and a row after each load gives, for two nodes against one, the ratio of fleetd's CPU a task in
 * each round and their median: one round's ratio moves by a third with the machine's load. The
 * push load offers the same rate to both, where the saturate load's CPU a task falls as its
 * throughput, and so its batches, grow.
 *
 * The push load also runs on one PostgreSQL node at half the rate, in submit requests of the
 * whole rate's size, half as often: the load each node of two carries. A node's CPU a task grows
 * as its rate falls (its costs by the second and by the request are shared by fewer tasks), so
 * two nodes against that, not against one node at the whole rate, is what a second node costs.
 * Its ratio is the last row.
 *
 * With `--idle-node 1` each round also runs the end-to-end load on the first of two nodes only:
 * the second node then does nothing but hear the first's events through Redis, and its CPU a task
 * (in `per node`) is what every node handling every event costs, apart from the rest.
 *
 * With `--pin 1` the end-to-end load runs with each fleetd node bound to a core of its own
 * (taskset), and PostgreSQL's backends and the load generator to the cores left, if any: on a
 * machine with a core for each node and some to spare, whether a second node adds capacity.
 */
import { randomBytes } from 'node:crypto';
import { cpus } from 'node:os';
import { BENCH_DATABASE_URL, BENCH_REDIS_URL, cpuMsOf, dropSchemas, flags, percentile, pinToCores, postgresBackendsOf, report, startServerProcess, type Row, type ServerProcess } from '../lib.js';
import { Client, driveEndToEnd } from '../load.js';
import { phase } from './ws.js';


interface Configuration {
  store: string;
  nodes: number;
  env: Record<string, string>;
}

/** One PostgreSQL node, or two with Redis, on a fresh schema (and Redis prefix), whose name goes into `schemas` to be dropped. */
function postgres(schemas: string[], nodes: 1 | 2): Configuration {
  const name = `fleetd_bench_${randomBytes(4).toString('hex')}`;
  schemas.push(name);
  const env = { FLEETD_DATABASE_URL: BENCH_DATABASE_URL, FLEETD_DATABASE_SCHEMA: name };
  return nodes === 1
    ? { store: 'postgres', nodes, env }
    : { store: 'postgres + redis', nodes, env: { ...env, FLEETD_REDIS_URL: BENCH_REDIS_URL, FLEETD_REDIS_PREFIX: `${name}:` } };
}

/** Each configuration with fresh state: SQLite (a new data dir each start), one PostgreSQL node, two with Redis. */
function configurations(schemas: string[]): Configuration[] {
  return [{ store: 'sqlite', nodes: 1, env: {} }, postgres(schemas, 1), postgres(schemas, 2)];
}

export default async function pgScenario(args: string[]): Promise<void> {
  const f = flags(args, { seconds: 10, agents: 50, 'ws-agents': 200, rate: 1000, 'ws-seconds': 5, pin: 0, rounds: 1, 'idle-node': 0 });
  const schemas: string[] = [];
  const rows: Row[] = [];
  try {
    for (let round = 1; round <= f.rounds; round++) {
      const done: Row[] = [];
      for (const c of configurations(schemas)) done.push(await endToEnd(c, f.seconds, f.agents, f.pin === 1));
      // A configuration of its own: a fresh schema and Redis prefix, as every run has.
      if (f['idle-node'] === 1) done.push(await endToEnd(postgres(schemas, 2), f.seconds, f.agents, f.pin === 1, 1));
      const base = done[0]['tasks/s'] as number;
      for (const row of done) {
        row.ratio = Math.round(((row['tasks/s'] as number) / base) * 100) / 100;
        if (f.rounds > 1) row.round = round;
      }
      rows.push(...done);
    }
    if (f.rounds > 1) rows.push(twoNodesAgainstOne(rows, 'saturate'));
    const wsFlags = { agents: f['ws-agents'], rate: f.rate, seconds: f['ws-seconds'], observers: 10, credit: 4, baseline: 0 };
    for (let round = 1; round <= f.rounds; round++) {
      // And one PostgreSQL node at half the rate: the load each node of two carries.
      const halfRate = { ...postgres(schemas, 1), halfRate: true };
      for (const c of [...configurations(schemas), halfRate]) {
        const half = 'halfRate' in c;
        // At half the rate in requests of the whole rate's size: what each node of two is sent.
        const push = half
          ? await phase('ws', { ...wsFlags, rate: wsFlags.rate / 2 }, { env: c.env, nodes: 1, batch: Math.round(wsFlags.rate / 100) })
          : await phase('ws', wsFlags, { env: c.env, nodes: c.nodes });
        rows.push({
          load: half ? 'ws push, half the rate' : 'ws push',
          store: c.store,
          nodes: c.nodes,
          agents: wsFlags.agents,
          'tasks/s': push['tasks/s'],
          p50_ms: push['dispatch p50 ms'],
          p95_ms: push['dispatch p95 ms'],
          p99_ms: push['dispatch p99 ms'],
          errors: push.errors,
          rss_mb: push['rss peak MB'],
          'cpu µs/task fleetd': push['server cpu µs/task'],
          ...(f.rounds > 1 ? { round } : {}),
        });
      }
    }
    if (f.rounds > 1) rows.push(twoNodesAgainstOne(rows, 'ws push'));
    rows.push(twoNodesAgainstOne(rows, 'ws push', 'ws push, half the rate'));
  } finally {
    await dropSchemas(schemas);
  }
  report('pg', rows, {
    flags: f,
    note: 'saturate: p50/p95/p99 are submit-to-complete; ws push: submit-to-dispatch at the offered rate. ratio is tasks/s against SQLite. cpu µs/task: fleetd nodes, their PostgreSQL backends, the load generator',
  });
}

/**
 * fleetd's CPU a task on two nodes (both together) over one node's, in each round of a load and
 * their median. `oneNodeLoad`: one node's row of another load (the push at half the rate: what each
 * node of two carries, since a node's CPU a task grows as its rate falls).
 */
function twoNodesAgainstOne(rows: Row[], load: string, oneNodeLoad = load): Row {
  const cpu = (of: string, store: string) => rows.filter((r) => r.load === of && r.store === store).map((r) => r['cpu µs/task fleetd'] as number);
  const [one, two] = [cpu(oneNodeLoad, 'postgres'), cpu(load, 'postgres + redis')];
  const ratios = two.map((us, i) => Math.round((us / one[i]) * 100) / 100);
  const against = oneNodeLoad === load ? '1 node' : '1 node at half the rate';
  return { load, store: `2 nodes ÷ ${against}, fleetd CPU a task`, nodes: '', agents: '', 'tasks/s': '', ratio: `median ${percentile(ratios, 50)} (rounds: ${ratios.join(', ')})` };
}

/**
 * The saturate load: agents claiming up to 10 at a time and completing each, while submitters keep
 * the queue fed in batches. Agents and submits go to the first `loaded` nodes (all by default); every
 * node's CPU is counted.
 */
async function endToEnd(c: Configuration, seconds: number, agentCount: number, pin: boolean, loaded = c.nodes): Promise<Row> {
  const nodes: ServerProcess[] = [];
  // The first node migrates; the others find the schema ready.
  for (let i = 0; i < c.nodes; i++) nodes.push(await startServerProcess(c.env));
  const clients = nodes.map((n) => new Client(n.url, 64));
  const busy = clients.slice(0, loaded);
  try {
    const type = 'pg-bench';
    const agents: { id: string; client: Client }[] = [];
    for (let k = 0; k < agentCount; k++) {
      const client = busy[k % busy.length];
      const res = await client.call('POST', '/v1/agents', { name: `bench-${k}`, capabilities: [type], maxConcurrency: 10 });
      agents.push({ id: res.body.agent.id, client });
    }
    // A first batch opens the pools' database connections, so that their backends can be found.
    for (const client of clients) await client.call('POST', '/v1/tasks/batch', { tasks: [{ type: 'warm-up' }] });
    const backendsOf = c.env.FLEETD_DATABASE_URL ? await Promise.all(nodes.map((n) => postgresBackendsOf(n.pid, BENCH_DATABASE_URL))) : nodes.map(() => []);
    const pinning = pin ? pinProcesses(nodes, backendsOf.flat()) : '';
    // Each process read once: the totals are the nodes' sums.
    const cpu = () => {
      const perNode = nodes.map((n, i) => ({ fleetd: n.cpuMs(), postgres: backendsOf[i].reduce((ms, pid) => ms + cpuMsOf(pid), 0) }));
      return {
        fleetd: perNode.reduce((ms, n) => ms + n.fleetd, 0),
        postgres: perNode.reduce((ms, n) => ms + n.postgres, 0),
        loadgen: cpuMsOf(process.pid),
        nodes: perNode,
      };
    };
    const before = cpu();
    const depth = Math.max(500, agentCount * 20);
    const r = await driveEndToEnd({ clients: busy, agents, type, seconds, depth, batch: Math.ceil(depth / busy.length) });
    const after = cpu();
    const tasks = r.tasksPerSecond * seconds;
    const perTask = (k: 'fleetd' | 'postgres' | 'loadgen') => Math.round(((after[k] - before[k]) * 1_000) / tasks);
    const us = (ms: number) => Math.round((ms * 1_000) / tasks);
    // Each node's CPU a task of the whole run: fleetd / its PostgreSQL backends.
    const perNode = after.nodes
      .map((n, i) => `${us(n.fleetd - before.nodes[i].fleetd)}${c.env.FLEETD_DATABASE_URL ? ` / ${us(n.postgres - before.nodes[i].postgres)}` : ''}`)
      .join(', ');
    return {
      load: loaded < c.nodes ? `saturate, node 1 of ${c.nodes} loaded` : 'saturate',
      store: c.store,
      nodes: c.nodes,
      agents: agentCount,
      'tasks/s': r.tasksPerSecond,
      p50_ms: r.p50,
      p95_ms: r.p95,
      p99_ms: r.p99,
      errors: r.errors,
      rss_mb: nodes.reduce((mb, n) => mb + n.rssMb(), 0),
      'cpu µs/task fleetd': perTask('fleetd'),
      'postgres': c.env.FLEETD_DATABASE_URL ? perTask('postgres') : '',
      'loadgen': perTask('loadgen'),
      'per node': perNode,
      ...(pin ? { pinned: pinning } : {}),
    };
  } finally {
    // The load generator runs the next configurations on every core again.
    if (pin) pinToCores(process.pid, allCores());
    await Promise.all(clients.map((cl) => cl.close()));
    await Promise.all(nodes.map((n) => n.stop()));
  }
}

// The machine's cores, not this process's: its own affinity changes while pinned.
const allCores = () => Array.from({ length: cpus().length }, (_, i) => i);

/**
 * Each node to a core of its own, PostgreSQL's backends and this load generator to the cores left
 * (every core when none is: then they compete with the nodes). Says where each went.
 */
function pinProcesses(nodes: ServerProcess[], backends: number[]): string {
  const cores = allCores();
  if (nodes.length > cores.length) throw new Error(`--pin 1: ${nodes.length} nodes need as many cores; this machine has ${cores.length}`);
  nodes.forEach((node, i) => pinToCores(node.pid, [cores[i]]));
  const left = cores.slice(nodes.length);
  const rest = left.length > 0 ? left : cores;
  for (const pid of [...backends, process.pid]) pinToCores(pid, rest);
  return `${nodes.map((_, i) => `node ${i + 1}: core ${cores[i]}`).join(', ')}; PostgreSQL and load generator: ${left.length > 0 ? `cores ${left.join(',')}` : 'every core (none left)'}`;
}
