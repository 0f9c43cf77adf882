import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { repeatCheck } from '../src/core/rules/idempotency.js';
import { openPostgres, type PostgresDriver } from '../src/store/postgres/driver.js';
import { migrations } from '../src/store/postgres/migrations.js';
import { CLAIM_TICK_FUNCTION, TASK_CLAIM } from '../src/store/postgres/tasks.js';
import { PLAN_GROUPS_FUNCTION } from '../src/store/postgres/types.js';
import { CLAIM_BEAT_WRITE_MS, taskLockId } from '../src/store/store.js';
import { eventually, startTestServer, stopAndDrop, type TestServer, within } from './helpers.js';
import { T0, task } from './store/harness.js';
import { planClaim } from '../src/core/rules/admission.js';
import { decideLock, lockProbes } from '../src/core/rules/locks.js';
import { freshPostgres, TEST_DATABASE_URL, uniqueSchema } from './store/postgres.js';

interface PlanNode {
  'Node Type': string;
  'Relation Name'?: string;
  'Index Name'?: string;
  'Actual Rows'?: number;
  'Rows Removed by Filter'?: number;
  Strategy?: string;
  Plans?: PlanNode[];
}

function planNodes(node: PlanNode): PlanNode[] {
  return [node, ...(node.Plans ?? []).flatMap(planNodes)];
}

/**
 * Calls `before` ahead of each named statement any connection of this process sends (a pool's
 * clients included, inside transactions too), until the returned function puts pg back.
 */
function beforeStatements(before: (name: string) => Promise<void> | void): () => void {
  const query = pg.Client.prototype.query;
  pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
    const config = args[0] as { name?: string } | undefined;
    if (config && typeof config === 'object' && typeof config.name === 'string') {
      return Promise.resolve(before(config.name)).then(() => (query as (...a: unknown[]) => unknown).apply(this, args));
    }
    return (query as (...a: unknown[]) => unknown).apply(this, args);
  } as typeof query;
  return () => {
    pg.Client.prototype.query = query;
  };
}

/**
 * Another node's write just before a claim's lease: task `id` set queued (as its promotion would),
 * from a connection of its own, ahead of the first statement named `statement`. `close()` puts pg
 * back and ends the connection, and may be called twice.
 */
async function queueBeforeLease(schema: string, statement: string, id: number): Promise<{ queued(): boolean; close(): Promise<void> }> {
  const side = new pg.Client({ connectionString: TEST_DATABASE_URL, options: `-c search_path=${schema}` });
  await side.connect();
  let queued = false;
  let closed = false;
  const restore = beforeStatements(async (name) => {
    if (queued || name !== statement) return;
    queued = true;
    await side.query("UPDATE tasks SET status = 'queued' WHERE id = $1", [id]);
  });
  return {
    queued: () => queued,
    async close() {
      if (closed) return;
      closed = true;
      restore();
      await side.end();
    },
  };
}

describe('postgres store', { timeout: 60_000 }, () => {
  it('runs versioned migrations once, even when two nodes start together', async () => {
    const schema = uniqueSchema();
    const a = openPostgres({ url: TEST_DATABASE_URL, schema });
    const b = openPostgres({ url: TEST_DATABASE_URL, schema });
    try {
      await Promise.all([a.migrate(), b.migrate()]);
      await a.migrate();
      const client = new pg.Client({ connectionString: TEST_DATABASE_URL });
      await client.connect();
      const { rows } = await client.query(`SELECT version FROM ${schema}.schema_migrations ORDER BY version`);
      await client.end();
      // Each version once, though two nodes ran them at the same moment.
      assert.deepEqual(rows, migrations.map((m) => ({ version: m.version })));
    } finally {
      await a.database.dropSchema();
      await Promise.all([a.close(), b.close()]);
    }
  });

  it("keeps calling its own hot-path functions when a node of another release puts back its own (a rolling upgrade)", async () => {
    const { driver, destroy } = await freshPostgres();
    const client = new pg.Client({ connectionString: TEST_DATABASE_URL });
    await client.connect();
    try {
      // This release's node has migrated; then a node of the release before restarts and puts back
      // its own functions: bare names, and (here) bodies that fail outright, so that a call of one shows.
      await client.query(`SET search_path TO ${driver.database.schema}`);
      const older = [
        'fleetd_claim_tick(agent_ids text[], heartbeat_at bigint, claims jsonb) RETURNS TABLE (agents json, claimed json)',
        'fleetd_announce_unleased(ids bigint[]) RETURNS void',
        'fleetd_whole_batch(inserted int, wanted int) RETURNS boolean',
      ];
      for (const signature of older) {
        await client.query(`CREATE OR REPLACE FUNCTION ${signature} LANGUAGE plpgsql AS $f$ BEGIN RAISE EXCEPTION 'the older release''s function was called'; END $f$`);
      }

      const { store } = driver;
      await store.agentCreateMany([{ id: 'a', name: 'a', capabilities: ['roll'], labels: {}, maxConcurrency: 5, namespace: 'default', tokenHash: 'h-a', now: 0 }]);
      const tasks = [1, 2, 3].map((i) => ({ ...task('roll'), idempotencyKey: `roll-${i}` }));
      const submitted = await store.taskInsertMany({ tasks, now: 0, onRepeat: repeatCheck('task', tasks) });
      assert.equal(submitted.filter((s) => s.created).length, 3, 'the batch with keys went in whole');
      const claimed = await store.taskClaim({ agentId: 'a', max: 5, now: 1, claimId: 42 });
      assert.equal(claimed.tasks.length, 3);
      const byClaim = await store.taskLeasedByClaims({ agentId: 'a', claimIds: [42] });
      assert.deepEqual(byClaim.map((t) => t.id).sort(), claimed.tasks.map((t) => t.id).sort(), 'the claim wrote its id on every task it leased');
      const { rows } = await client.query(`SELECT proname FROM pg_proc WHERE pronamespace = $1::regnamespace AND proname LIKE 'fleetd\\_claim\\_tick%' ORDER BY proname`, [driver.database.schema]);
      assert.deepEqual(rows.map((r) => r.proname), ['fleetd_claim_tick', CLAIM_TICK_FUNCTION.name], "the older release's function is left to its nodes");
    } finally {
      await client.end();
      await destroy();
    }
  });

  it("reads a tick's tasks by id in one statement, each caller its own task", async () => {
    const { driver, destroy } = await freshPostgres();
    const { database, store } = driver;
    const query = database.query.bind(database);
    const reads: unknown[][] = [];
    database.query = ((text: Parameters<typeof query>[0], values?: unknown[]) => {
      if (typeof text === 'string' && text.includes('FROM tasks WHERE id')) reads.push(values ?? []);
      return query(text, values);
    }) as typeof database.query;
    try {
      const tasks = Array.from({ length: 50 }, (_, i) => task('read', { payload: { i } }));
      const ids = (await store.taskInsertMany({ tasks, now: 0, onRepeat: repeatCheck('task', tasks) })).map((r) => r.task.id);
      // Each id asked twice, and one that is no task's.
      const asked = [...ids, ...ids, ids[ids.length - 1] + 1_000];
      const found = await Promise.all(asked.map((id) => store.taskGet({ id })));
      assert.equal(reads.length, 1, 'one statement for the tick');
      assert.deepEqual(found.slice(0, 100).map((t) => [t?.id, t?.payloadJson]), asked.slice(0, 100).map((id) => [id, JSON.stringify({ i: ids.indexOf(id) })]));
      assert.notEqual(found[0], found[50], 'each caller gets a task of its own');
      assert.equal(found[100], undefined);
      // An id past bigint's range, asked in the same tick as a task's, is no task's, and fails no other read.
      const [beyond, beside] = await Promise.all([store.taskGet({ id: 1e19 }), store.taskGet({ id: ids[1] })]);
      assert.equal(beyond, undefined);
      assert.equal(beside?.id, ids[1]);
      // The next tick, a statement of its own.
      assert.equal((await store.taskGet({ id: ids[0] }))?.id, ids[0]);
      assert.equal(reads.length, 3);
    } finally {
      database.query = query;
      await destroy();
    }
  });

  it('keeps to its own schema even when the URL sets connection options', async () => {
    const schema = uniqueSchema();
    const driver = openPostgres({ url: `${TEST_DATABASE_URL}?options=-c%20statement_timeout%3D60000`, schema });
    try {
      await driver.migrate();
      await driver.store.agentCreateMany([{ id: 'own', name: 'own', capabilities: [], labels: {}, maxConcurrency: 1, namespace: 'default', tokenHash: 'h', now: 0 }]);
      const client = new pg.Client({ connectionString: TEST_DATABASE_URL });
      await client.connect();
      const { rows } = await client.query(`SELECT id FROM ${schema}.agents`);
      await client.end();
      assert.deepEqual(rows, [{ id: 'own' }]);
    } finally {
      await driver.database.dropSchema();
      await driver.close();
    }
  });

  it('claims from the head of an index range however large the backlog of another type', async () => {
    const { driver, destroy } = await freshPostgres();
    const { store } = driver;
    const client = new pg.Client({ connectionString: TEST_DATABASE_URL, options: `-c search_path=${driver.database.schema}` });
    await client.connect();
    try {
      // 100,000 queued tasks of one type, in one statement (the counters follow through the trigger).
      await client.query(`INSERT INTO tasks (type, req_key, payload, priority, status, max_attempts, lease_ms, backoff_ms, run_at, created_at, updated_at)
        SELECT 'bulk', 'bulk', '{}', i % 5, 'queued', 3, 30000, 1000, 0, 0, 0 FROM generate_series(1, 100000) i`);
      const [other] = await store.taskInsertMany({ tasks: [task('other')], now: 0, onRepeat: repeatCheck('task', []) });
      await client.query('ANALYZE tasks');
      await store.agentCreateMany([
        { id: 'both', name: 'both', capabilities: ['bulk', 'other'], labels: {}, maxConcurrency: 10, namespace: 'default', tokenHash: 'h', now: 0 },
      ]);
      for (const capabilities of [['other'], ['bulk', 'other']]) {
        await client.query('BEGIN');
        const claims = JSON.stringify([{ ord: 1, agentId: 'both', max: 5, now: 1, maxConcurrency: 10 }]);
        const { rows } = await client.query(`EXPLAIN (ANALYZE, FORMAT JSON) ${TASK_CLAIM.text}`, [claims, capabilities, null]);
        await client.query('ROLLBACK');
        const nodes = planNodes(rows[0]['QUERY PLAN'][0].Plan);
        const onTasks = nodes.filter((n) => n['Relation Name'] === 'tasks' && n['Node Type'] !== 'ModifyTable');
        assert.ok(onTasks.length > 0);
        for (const n of onTasks) {
          assert.notEqual(n['Node Type'], 'Seq Scan', `no scan of the backlog (${capabilities})`);
          assert.ok(!n['Node Type'].startsWith('Bitmap'), `no bitmap over the backlog (${capabilities})`);
          assert.ok((n['Actual Rows'] ?? 0) <= 5, `reads at most the rows it leases, not the backlog: ${n['Actual Rows']}`);
        }
        assert.ok(onTasks.some((n) => n['Index Name'] === 'tasks_claim'));
      }
      const claim = await store.taskClaim({ agentId: 'both', max: 3, now: 1 });
      assert.deepEqual(claim.tasks.map((t) => [t.type, t.priority]), [['bulk', 4], ['bulk', 4], ['bulk', 4]]);
      assert.ok(claim.tasks[0].id < claim.tasks[1].id);
      const counts = await store.taskCounts();
      assert.equal(counts.filter((c) => c.type === 'bulk').reduce((n, c) => n + c.count, 0), 100_000);
      assert.ok(other.created);
    } finally {
      await client.end();
      await destroy();
    }
  });

  it("sums a planned claim's queued groups, 1,000 keys of them, by hashing rather than sorting", async () => {
    const { driver, destroy } = await freshPostgres();
    const connect = async () => {
      const client = new pg.Client({ connectionString: TEST_DATABASE_URL, options: `-c search_path=${driver.database.schema}` });
      await client.connect();
      return client;
    };
    const [client, other] = [await connect(), await connect()];
    // The statements run inside the function, with their plans, as auto_explain tells them.
    const plans: { 'Query Text': string; Plan: PlanNode }[] = [];
    client.on('notice', (notice) => {
      if (notice.message?.includes('plan:')) plans.push(JSON.parse(notice.message.slice(notice.message.indexOf('{'))));
    });
    try {
      // 4,000 tasks of 1,000 keys, queued by two connections: two shards of each group to sum.
      for (const by of [client, other]) {
        await by.query(`INSERT INTO tasks (type, req_key, payload, priority, status, max_attempts, lease_ms, backoff_ms, run_at, created_at, updated_at, concurrency_key)
          SELECT 'fair', 'fair', '{}', 0, 'queued', 3, 30000, 1000, 0, 0, 0, 'key-' || (i % 1000) FROM generate_series(1, 2000) i`);
      }
      await client.query("LOAD 'auto_explain'");
      await client.query('SET auto_explain.log_min_duration = 0; SET auto_explain.log_nested_statements = on; SET auto_explain.log_format = json; SET client_min_messages = log');
      const { rows } = await client.query(`SELECT * FROM ${PLAN_GROUPS_FUNCTION.name}($1::text[])`, [['fair']]);
      assert.equal(rows.length, 1000);
      assert.ok(rows.every((row) => row.ckey.startsWith('key-') && Number(row.n) === 4));
      const inner = plans.find((p) => p['Query Text'].includes('queued_groups'));
      assert.ok(inner, 'the plan of the statement inside the function');
      const nodes = planNodes(inner.Plan);
      assert.deepEqual(nodes.filter((n) => n['Node Type'] === 'Sort'), [], 'no sort of the shards');
      assert.ok(nodes.some((n) => n['Node Type'] === 'Aggregate' && n.Strategy === 'Hashed'));
    } finally {
      await Promise.all([client.end(), other.end()]);
      await destroy();
    }
  });

  it('keeps two nodes claiming for one agent at once within its maxConcurrency, each task handed out once, with a plan needed or not', async () => {
    const { driver: a, openSibling, destroy } = await freshPostgres();
    const b = openSibling();
    const insert = (...tasks: ReturnType<typeof task>[]) => a.store.taskInsertMany({ tasks, now: 0, onRepeat: repeatCheck('task', tasks) });
    const handedOut: number[] = [];
    // Each round, a new agent of maxConcurrency 5 claims 2 at a time, three times on each node at once.
    const round = async (agentId: string) => {
      await a.store.agentCreateMany([{ id: agentId, name: agentId, capabilities: ['two'], labels: {}, maxConcurrency: 5, namespace: 'default', tokenHash: `h-${agentId}`, now: 0 }]);
      const claims = await Promise.all([a, b, a, b, a, b].map((node, i) => node.store.taskClaim({ agentId, max: 2, now: CLAIM_BEAT_WRITE_MS + 1 + i })));
      handedOut.push(...claims.flatMap((c) => c.tasks.map((t) => t.id)));
      assert.equal((await a.store.taskList({ agentId, status: 'leased', limit: 100 })).items.length, 5, `${agentId} holds its maxConcurrency`);
    };
    try {
      await insert(...Array.from({ length: 200 }, () => task('two')));
      // Nothing needs a plan: each node's tick of claims is one call of the claim function.
      for (let i = 0; i < 15; i++) await round(`plain-${i}`);
      // A queued task with a concurrency key needs core's plan: the claims go through a transaction.
      await insert(task('two', { concurrencyKey: 'k' }));
      for (let i = 0; i < 15; i++) await round(`planned-${i}`);
      assert.equal(new Set(handedOut).size, 150, 'no task handed out twice');
      // Another node sees the agent as the claims left it: online, its heartbeat the last claim of
      // the node whose tick went first (the other's came within CLAIM_BEAT_WRITE_MS of it, unwritten).
      const last = await b.store.agentGet({ id: 'planned-14' });
      assert.equal(last?.status, 'online');
      assert.ok([5, 6].map((n) => CLAIM_BEAT_WRITE_MS + n).includes(last?.lastHeartbeatAt ?? 0), `heartbeat ${last?.lastHeartbeatAt}`);
      await assert.rejects(b.store.taskClaim({ agentId: 'nobody', max: 1, now: 7 }), { code: 'FLEETD_ERR_NOT_FOUND' });
    } finally {
      await b.close();
      await destroy();
    }
  });

  it('deals one tick of claims out of one statement in their order, a pinned task to its agent only', async () => {
    const { driver, destroy } = await freshPostgres();
    const { store } = driver;
    const agent = (id: string) => ({ id, name: id, capabilities: ['deal'], labels: {}, maxConcurrency: 2, namespace: 'default', tokenHash: `h-${id}`, now: 0 });
    try {
      await store.agentCreateMany(['p1', 'p2', 'p3'].map(agent));
      const tasks = [5, 3, 1, 0, 0, 0].map((priority) => task('deal', { priority }));
      const [pinned] = await store.taskInsertMany({ tasks: [task('deal', { priority: 9, requires: ['deal', 'agent:p2'] })], now: 0, onRepeat: repeatCheck('task', []) });
      await store.taskInsertMany({ tasks, now: 0, onRepeat: repeatCheck('task', tasks) });
      // Claimed together, the three are one tick: p1 and p3 may take the same keys, p2 its pinned task as well.
      const [p1, p2, p3] = await Promise.all(['p1', 'p2', 'p3'].map((agentId) => store.taskClaim({ agentId, max: 5, now: 1 })));
      assert.deepEqual(p1.tasks.map((t) => t.priority), [5, 3], 'the first claim gets the first tasks, up to its maxConcurrency');
      assert.ok(p2.tasks.some((t) => t.id === pinned.task.id), 'the pinned task goes to its agent');
      assert.ok(!p1.tasks.concat(p3.tasks).some((t) => t.id === pinned.task.id));
      const all = [p1, p2, p3].flatMap((c) => c.tasks);
      assert.equal(new Set(all.map((t) => t.id)).size, 6, 'each agent is dealt its maxConcurrency, no task twice');
      for (const c of [p1, p2, p3]) {
        assert.equal(c.tasks.length, 2);
        assert.ok(c.tasks.every((t) => t.status === 'leased' && t.agentId === c.agent.id && t.attempts === 1));
        assert.equal(c.room, 0);
      }
      const left = await store.taskList({ status: 'queued', limit: 10 });
      assert.deepEqual(left.items.map((t) => t.priority), [0], 'the lowest is left');
    } finally {
      await destroy();
    }
  });

  it("locks no more of a key than a tick's claims may lease from it: another node's claim of that key is not left empty", async () => {
    const { driver, openSibling, destroy } = await freshPostgres();
    const other = openSibling();
    const client = new pg.Client({ connectionString: TEST_DATABASE_URL, options: `-c search_path=${driver.database.schema}` });
    await client.connect();
    const agent = (id: string, capabilities: string[]) => ({ id, name: id, capabilities, labels: {}, maxConcurrency: 10, namespace: 'default', tokenHash: `h-${id}`, now: 0 });
    try {
      const both = ['a1', 'a2', 'a3', 'a4', 'a5'];
      await driver.store.agentCreateMany([...both.map((id) => agent(id, ['hi', 'lo'])), agent('b', ['lo'])]);
      const tasks = [...Array.from({ length: 10 }, () => task('hi', { priority: 5 })), ...Array.from({ length: 10 }, () => task('lo'))];
      await driver.store.taskInsertMany({ tasks, now: 0, onRepeat: repeatCheck('task', tasks) });
      // One node's tick, its transaction held open: five claims of two, by agents that may take both keys.
      const claims = both.map((id) => ({ keys: ['hi', 'lo', `agent:${id}`], maxConcurrency: 10, namespace: null, agentId: id, max: 2, now: 1 }));
      await client.query('BEGIN');
      const { rows } = await client.query(`SELECT claimed FROM ${CLAIM_TICK_FUNCTION.name}($1, $2, $3)`, [both, 1, JSON.stringify(claims)]);
      assert.deepEqual(
        rows[0].claimed.map((c: { leased_tasks: { type: string }[] }) => c.leased_tasks.map((t) => t.type)),
        both.map(() => ['hi', 'hi']),
      );
      // Meanwhile, on another node, an agent of the other key: the tick leases none of its tasks.
      const b = await other.store.taskClaim({ agentId: 'b', max: 5, now: 2 });
      await client.query('COMMIT');
      assert.equal(b.tasks.length, 5, 'the tick holds at most one claim\'s room of the key it leases nothing from');
    } finally {
      await client.end();
      await other.close();
      await destroy();
    }
  });

  it("leases a plan's turns together, all or none: a key with a task past its expiry, not yet swept, goes a task at a time", async () => {
    const { driver, destroy } = await freshPostgres();
    const { store } = driver;
    try {
      await store.agentCreateMany([{ id: 'f', name: 'f', capabilities: ['f'], labels: {}, maxConcurrency: 10, namespace: 'default', tokenHash: 'h-f', now: T0 }]);
      const insert = (...tasks: ReturnType<typeof task>[]) => store.taskInsertMany({ tasks, now: T0, onRepeat: repeatCheck('task', tasks) });
      // Every turn has its task: one statement leases them, handed out in the plan's order, keys
      // taking turns, each key's oldest first.
      const ready = await insert(...['c', 'c', 'c', 'd', 'd'].map((concurrencyKey) => task('f', { concurrencyKey })));
      const leases: string[] = [];
      const restore = beforeStatements((name) => {
        if (name.startsWith('fleetd_lease_head')) leases.push(name);
      });
      const all = await store.taskClaim({ agentId: 'f', max: 4, now: T0 + 10, plan: planClaim }).finally(restore);
      assert.deepEqual(leases, ['fleetd_lease_heads']);
      assert.deepEqual(all.tasks.map((t) => [t.concurrencyKey, t.id]), [0, 3, 1, 4].map((i) => [ready[i].task.concurrencyKey, ready[i].task.id]));
      assert.ok(all.tasks.every((t) => t.status === 'leased' && t.agentId === 'f' && t.attempts === 1));
      assert.equal(all.room, 6);
      // The plan counts three tasks of a and two of b, but a's first expired before the claim: the
      // statement leases none, and the claim goes a task at a time past it.
      const [expired, ...rest] = await insert(
        task('f', { concurrencyKey: 'a', scheduleTimeoutMs: 1 }),
        ...['a', 'a', 'b', 'b'].map((concurrencyKey) => task('f', { concurrencyKey })),
      );
      const claim = await store.taskClaim({ agentId: 'f', max: 6, now: T0 + 10, plan: planClaim });
      assert.deepEqual(claim.tasks.map((t) => t.concurrencyKey), ['a', 'b', 'a', 'b', 'c']);
      assert.deepEqual(new Set(claim.tasks.slice(0, 4).map((t) => t.id)), new Set(rest.map((r) => r.task.id)));
      assert.equal(claim.room, 1);
      const leased = await store.taskList({ agentId: 'f', status: 'leased', limit: 20 });
      assert.equal(leased.items.length, 9, 'every task handed out is leased, and no other');
      assert.equal((await store.taskGet({ id: expired.task.id }))?.status, 'queued', 'the expired task is not handed out');
    } finally {
      await destroy();
    }
  });

  it('never leases a task that locks resources without its locks, when it is queued again between what a planned claim read and its lease', async () => {
    const { driver, destroy } = await freshPostgres();
    const { store, database } = driver;
    let race: Awaited<ReturnType<typeof queueBeforeLease>> | undefined;
    try {
      await store.agentCreateMany([{ id: 'f', name: 'f', capabilities: ['f'], labels: {}, maxConcurrency: 10, namespace: 'default', tokenHash: 'h-f', now: T0 }]);
      const insert = (...tasks: ReturnType<typeof task>[]) => store.taskInsertMany({ tasks, now: T0, onRepeat: repeatCheck('task', tasks) });
      // The oldest task of key k locks a resource and is not queued yet (it runs later); the claim
      // reads that no queued task locks anything, and plans a turn of k.
      const [locking] = await insert(task('f', { concurrencyKey: 'k', locks: ['repo/a'], runAt: T0 + 5 }));
      const [plain] = await insert(task('f', { concurrencyKey: 'k' }));
      assert.equal(locking.task.status, 'scheduled');
      // Another node queues it (as its promotion would) just before the claim's lease.
      race = await queueBeforeLease(database.schema, 'fleetd_lease_heads', locking.task.id);
      const claim = await store.taskClaim({ agentId: 'f', max: 1, now: T0 + 10, plan: planClaim });
      await race.close();
      assert.ok(race.queued());
      assert.deepEqual(claim.tasks.map((t) => t.id), [plain.task.id], 'the task without locks goes; the one with locks waits for a claim that can take them');
      assert.equal((await store.taskGet({ id: locking.task.id }))?.status, 'queued');
      // The next claim sees it, and takes its lock with its lease.
      const next = await store.taskClaim({ agentId: 'f', max: 1, now: T0 + 11, plan: planClaim });
      assert.deepEqual(next.tasks.map((t) => t.id), [locking.task.id]);
      assert.deepEqual((await store.lockGet({ id: taskLockId(locking.task.id) }))?.resources, ['repo/a']);
    } finally {
      await race?.close();
      await destroy();
    }
  });

  it('goes past a task that locks resources, queued since the claim read that none did, when its turns go a task at a time', async () => {
    const { driver, destroy } = await freshPostgres();
    const { store, database } = driver;
    let race: Awaited<ReturnType<typeof queueBeforeLease>> | undefined;
    try {
      const agent = (id: string) => ({ id, name: id, capabilities: ['f', 'g'], labels: {}, maxConcurrency: 10, namespace: 'default', tokenHash: `h-${id}`, now: T0 });
      await store.agentCreateMany([agent('f'), agent('o')]);
      // Another agent holds the resource the oldest task will want.
      const held = await store.lockAcquire({
        id: 'held', namespace: 'default', agentId: 'o', resources: ['repo/b'], ttlMs: 60_000, description: '', now: T0,
        decide: (holders) => decideLock(holders, T0), probes: lockProbes(['repo/b']),
      });
      assert.ok(held.acquired);
      const insert = (...tasks: ReturnType<typeof task>[]) => store.taskInsertMany({ tasks, now: T0, onRepeat: repeatCheck('task', tasks) });
      // Key k has tasks of two types, so its turn is two groups and goes a statement a task.
      const [locking] = await insert(task('g', { concurrencyKey: 'k', locks: ['repo/b'], runAt: T0 + 5 }));
      const plain = await insert(task('f', { concurrencyKey: 'k' }), task('g', { concurrencyKey: 'k' }));
      race = await queueBeforeLease(database.schema, 'fleetd_lease_head', locking.task.id);
      // Taken, its lease would need undoing (its lock is held) where the claim kept no savepoint.
      const claim = await store.taskClaim({ agentId: 'f', max: 2, now: T0 + 10, plan: planClaim });
      await race.close();
      assert.ok(race.queued());
      assert.deepEqual(claim.tasks.map((t) => t.id), plain.map((p) => p.task.id));
      assert.equal((await store.taskGet({ id: locking.task.id }))?.status, 'queued');
    } finally {
      await race?.close();
      await destroy();
    }
  });

  it('announces the rows a claim locked and did not lease, on the transaction path too', async () => {
    const { driver, destroy } = await freshPostgres();
    try {
      await driver.store.agentCreateMany([{ id: 'x', name: 'x', capabilities: ['hi', 'lo'], labels: {}, maxConcurrency: 1, namespace: 'default', tokenHash: 'h-x', now: 0 }]);
      const tasks = [task('hi', { priority: 5 }), task('lo')];
      await driver.store.taskInsertMany({ tasks, now: 0, onRepeat: repeatCheck('task', tasks) });
      // A pause anywhere needs a plan: the claim goes by a transaction and the statement alone, not the tick's function.
      await driver.store.typePause({ namespace: 'default', type: 'elsewhere', key: null, until: null, reason: null, now: 0 });
      const heard: Record<string, number>[] = [];
      const stop = await driver.listen!((e) => heard.push(e));
      try {
        const claim = await driver.store.taskClaim({ agentId: 'x', max: 1, now: 1 });
        assert.deepEqual(claim.tasks.map((t) => t.type), ['hi'], 'it leased the best of the two keys it locked');
        await eventually(() => heard.length > 0, 5_000, 'the announcement of the row it left');
        assert.deepEqual(heard, [{ lo: 1 }]);
      } finally {
        await stop();
      }
    } finally {
      await destroy();
    }
  });

  it('does not wake listeners of other schemas in the same database', async () => {
    const a = await freshPostgres();
    const other = await freshPostgres();
    const sibling = a.openSibling();
    const insert = (driver: PostgresDriver, type: string) => driver.store.taskInsertMany({ tasks: [task(type)], now: 0, onRepeat: repeatCheck('task', []) });
    try {
      const heard: Record<string, number>[] = [];
      let wake: () => void = () => {};
      const stop = await a.driver.listen!((e) => {
        heard.push(e);
        wake();
      });
      // Another cluster in another schema: its notification, committed first, would arrive first.
      await insert(other.driver, 'theirs');
      const heardOwn = new Promise<void>((resolve) => (wake = resolve));
      await insert(sibling, 'ours');
      await heardOwn;
      assert.deepEqual(heard, [{ ours: 1 }]);
      await stop();
    } finally {
      await sibling.close();
      await other.destroy();
      await a.destroy();
    }
  });
});

describe('postgres store listener', { timeout: 30_000 }, () => {
  it('reconnects when its connection is cut, and wakes for what was queued meanwhile', async () => {
    const { driver: a, openSibling, destroy } = await freshPostgres();
    const b = openSibling();
    const admin = new pg.Client({ connectionString: TEST_DATABASE_URL });
    await admin.connect();
    try {
      let wake: (e: Record<string, number>) => void = () => {};
      const stop = await a.listen!((e) => wake(e));
      const cut = await admin.query('SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE application_name = $1', [
        `${a.database.nodeId}-listen`,
      ]);
      assert.deepEqual(cut.rows, [{ ok: true }]);
      const woken = new Promise<Record<string, number>>((resolve) => (wake = resolve));
      await b.store.taskInsertMany({ tasks: [task('r')], now: 0, onRepeat: repeatCheck('task', []) });
      assert.deepEqual(await within(woken, 15_000, 'the wake-up'), { r: 1 });
      await stop();
    } finally {
      await admin.end();
      await b.close();
      await destroy();
    }
  });
});

describe('postgres store after an outage', { timeout: 30_000 }, () => {
  it('catches up again a second later when its catch-up finds no pooled connection free', async () => {
    const { driver: a, openSibling, destroy } = await freshPostgres({ poolSize: 1, poolTimeoutMs: 200 });
    const b = openSibling();
    const admin = new pg.Client({ connectionString: TEST_DATABASE_URL });
    await admin.connect();
    try {
      // Queued while nobody listens: only a catch-up wakes for it.
      await b.store.taskInsertMany({ tasks: [task('r')], now: 0, onRepeat: repeatCheck('task', []) });
      const heard: Record<string, number>[] = [];
      const stop = await a.listen!((e) => heard.push(e));
      // The pool's one connection is busy for 1.5 s: the catch-up the reopened LISTEN connection
      // starts gets no connection within 200 ms.
      const busy = a.database.query('SELECT pg_sleep(1.5)');
      await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1', [`${a.database.nodeId}-listen`]);
      await busy;
      await eventually(() => heard.length > 0, 10_000, 'woken for the queued task');
      assert.deepEqual(heard[0], { r: 1 });
      await stop();
    } finally {
      await admin.end();
      await b.close();
      await destroy();
    }
  });
});

describe('postgres store recheck', { timeout: 30_000 }, () => {
  it('wakes one waiter for each requirement set with queued tasks, every recheckMs, and stops when told', async () => {
    const { driver, destroy } = await freshPostgres();
    try {
      await driver.store.taskInsertMany({ tasks: [task('a'), task('a'), task('a'), task('b')], now: 0, onRepeat: repeatCheck('task', []) });
      const heard: Record<string, number>[] = [];
      let twice: () => void = () => {};
      const woken = new Promise<void>((resolve) => (twice = resolve));
      const stop = await driver.listen!(
        (e) => {
          heard.push(e);
          if (heard.length === 2) twice();
        },
        { recheckMs: 50 },
      );
      await within(woken, 15_000, 'the wake-up');
      await stop();
      // Nothing was notified (the tasks were queued before listening): both wake-ups are rechecks.
      assert.deepEqual(heard.slice(0, 2), [
        { a: 1, b: 1 },
        { a: 1, b: 1 },
      ]);
      const after = heard.length;
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(heard.length, after, 'no recheck once stopped');
    } finally {
      await destroy();
    }
  });
});

describe('postgres store behind the HTTP API', { timeout: 30_000 }, () => {
  let server: TestServer;
  const schema = uniqueSchema();
  before(async () => {
    server = await startTestServer({ databaseUrl: TEST_DATABASE_URL, databaseSchema: schema, databasePoolSize: 1, databasePoolTimeoutMs: 300 });
  });
  after(() => stopAndDrop(server));

  it('answers 503 FLEETD_ERR_STORE_UNAVAILABLE when no connection frees up in time, then recovers', async () => {
    const { api } = server;
    const ready = (await api.get('/readyz')).body;
    assert.equal(ready.store, 'postgres');
    assert.equal(ready.pool.size, 1);
    const agent = await api.registerAgent(['pool']);
    const task = await api.submit({ type: 'pool' });
    // Another session holds the agent's row: the claim (which locks it) waits, holding the pool's only connection.
    const blocker = new pg.Client({ connectionString: TEST_DATABASE_URL, options: `-c search_path=${schema}` });
    await blocker.connect();
    let stuck: ReturnType<typeof api.claim> | undefined;
    try {
      await blocker.query('BEGIN');
      await blocker.query('SELECT * FROM agents WHERE id = $1 FOR UPDATE', [agent.id]);
      const [{ pid }] = (await blocker.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows;
      stuck = api.claim(agent.id, 1);
      // Waiting for the claim itself to wait on the lock: a maintenance query holding the connection a
      // moment would also show one in use, and the read below could then take it once it is free.
      const waiting = async () => (await blocker.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))', [pid])).rows[0].n;
      await eventually(async () => (await waiting()) === 1 && server.store.poolStats!().inUse === 1, 5_000, 'the claim waiting on the lock');
      const res = await api.get(`/v1/tasks/${task.id}`);
      assert.equal(res.status, 503);
      assert.equal(res.body.error.code, 'FLEETD_ERR_STORE_UNAVAILABLE');
      assert.equal(res.body.error.details.pool.size, 1);
    } finally {
      // Whatever failed above, the lock goes, so that the claim ends and the server can stop.
      await blocker.query('ROLLBACK').catch(() => {});
      await blocker.end();
    }
    const claimed = await stuck!;
    assert.deepEqual(claimed.map((t) => t.id), [task.id]);
    assert.equal((await api.get(`/v1/tasks/${task.id}`)).status, 200);
  });
});
