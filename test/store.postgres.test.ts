import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { migrations } from '../src/store/postgres/migrations.js';
import { PostgresStore, TASK_CLAIM } from '../src/store/postgres/postgres-store.js';
import { startTestServer, type TestServer } from './helpers.js';
import { freshPostgresStore, TEST_DATABASE_URL, uniqueSchema } from './store/postgres.js';

interface PlanNode {
  'Node Type': string;
  'Relation Name'?: string;
  'Index Name'?: string;
  'Actual Rows'?: number;
  'Rows Removed by Filter'?: number;
  Plans?: PlanNode[];
}

function planNodes(node: PlanNode): PlanNode[] {
  return [node, ...(node.Plans ?? []).flatMap(planNodes)];
}

describe('postgres store', { timeout: 60_000 }, () => {
  it('runs versioned migrations once, even when two nodes start together', async () => {
    const schema = uniqueSchema();
    const a = new PostgresStore({ url: TEST_DATABASE_URL, schema });
    const b = new PostgresStore({ url: TEST_DATABASE_URL, schema });
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
      await a.dropSchema();
      await Promise.all([a.close(), b.close()]);
    }
  });

  it('keeps to its own schema even when the URL sets connection options', async () => {
    const schema = uniqueSchema();
    const store = new PostgresStore({ url: `${TEST_DATABASE_URL}?options=-c%20statement_timeout%3D60000`, schema });
    try {
      await store.migrate();
      await store.agentCreateMany([{ id: 'own', name: 'own', capabilities: [], labels: {}, maxConcurrency: 1, tokenHash: 'h', now: 0 }]);
      const client = new pg.Client({ connectionString: TEST_DATABASE_URL });
      await client.connect();
      const { rows } = await client.query(`SELECT id FROM ${schema}.agents`);
      await client.end();
      assert.deepEqual(rows, [{ id: 'own' }]);
    } finally {
      await store.dropSchema();
      await store.close();
    }
  });

  it('claims from the head of an index range however large the backlog of another type', async () => {
    const { store, destroy } = await freshPostgresStore();
    const client = new pg.Client({ connectionString: TEST_DATABASE_URL, options: `-c search_path=${store.schema}` });
    await client.connect();
    try {
      // 100,000 queued tasks of one type, in one statement (the counters follow through the trigger).
      await client.query(`INSERT INTO tasks (type, req_key, payload, priority, status, max_attempts, lease_ms, backoff_ms, run_at, created_at, updated_at)
        SELECT 'bulk', 'bulk', '{}', i % 5, 'queued', 3, 30000, 1000, 0, 0, 0 FROM generate_series(1, 100000) i`);
      const [other] = await store.taskInsertMany({
        tasks: [{ type: 'other', payload: 'x', priority: 0, requires: ['other'], idempotencyKey: null, maxAttempts: 3, leaseMs: 1000, backoffMs: 10, runAt: 0 }],
        now: 0,
      });
      await client.query('ANALYZE tasks');
      await store.agentCreateMany([
        { id: 'both', name: 'both', capabilities: ['bulk', 'other'], labels: {}, maxConcurrency: 10, tokenHash: 'h', now: 0 },
      ]);
      for (const capabilities of [['other'], ['bulk', 'other']]) {
        await client.query('BEGIN');
        const { rows } = await client.query(`EXPLAIN (ANALYZE, FORMAT JSON) ${TASK_CLAIM.text}`, ['both', capabilities, 5, 1, 10]);
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

  it('wakes listeners in other processes when tasks become claimable, not the sender nor other schemas', async () => {
    const { store: a, destroy } = await freshPostgresStore();
    const b = new PostgresStore({ url: TEST_DATABASE_URL, schema: a.schema });
    try {
      const heardByA: Record<string, number>[] = [];
      const heardByB: Record<string, number>[] = [];
      let wake: () => void = () => {};
      const stopA = await a.listen((e) => {
        heardByA.push(e);
        wake();
      });
      const stopB = await b.listen((e) => heardByB.push(e));
      const task = { payload: null, priority: 0, idempotencyKey: null, maxAttempts: 2, leaseMs: 10, backoffMs: 10, runAt: 0 };
      const heard = new Promise<void>((resolve) => (wake = resolve));
      // Another cluster in another schema of the same database: its notifications are not A's.
      const other = await freshPostgresStore();
      await other.store.taskInsertMany({ tasks: [{ ...task, type: 'n', requires: ['n'] }], now: 0 });
      await other.destroy();
      await b.taskInsertMany({
        tasks: [{ ...task, type: 'n', requires: ['n'] }, { ...task, type: 'n', requires: ['n'] }, { ...task, type: 'm', requires: ['m', 'x'] }],
        now: 0,
      });
      await heard;
      assert.deepEqual(heardByA, [{ n: 2, 'm\nx': 1 }]);
      // A rescue on B (a lease that expired) is a wake-up too.
      await b.agentCreateMany([{ id: 'w', name: 'w', capabilities: ['n'], labels: {}, maxConcurrency: 5, tokenHash: 'h', now: 0 }]);
      await b.taskClaim({ agentId: 'w', max: 1, now: 0 });
      const rescued = new Promise<void>((resolve) => (wake = resolve));
      await b.taskRescueExpiredLeases({ now: 100, limit: 10 });
      await rescued;
      assert.deepEqual(heardByA[1], { n: 1 });
      assert.deepEqual(heardByB, [], 'a node does not hear its own notifications');
      await stopA();
      await stopB();
    } finally {
      await b.close();
      await destroy();
    }
  });
});

describe('postgres store listener', { timeout: 30_000 }, () => {
  it('reconnects when its connection is cut, and wakes for what was queued meanwhile', async () => {
    const { store: a, destroy } = await freshPostgresStore();
    const b = new PostgresStore({ url: TEST_DATABASE_URL, schema: a.schema });
    const admin = new pg.Client({ connectionString: TEST_DATABASE_URL });
    await admin.connect();
    try {
      let wake: (e: Record<string, number>) => void = () => {};
      const stop = await a.listen((e) => wake(e));
      const cut = await admin.query('SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE application_name = $1', [
        `${a.nodeId}-listen`,
      ]);
      assert.deepEqual(cut.rows, [{ ok: true }]);
      const woken = new Promise<Record<string, number>>((resolve) => (wake = resolve));
      await b.taskInsertMany({
        tasks: [{ type: 'r', payload: null, priority: 0, requires: ['r'], idempotencyKey: null, maxAttempts: 1, leaseMs: 10, backoffMs: 10, runAt: 0 }],
        now: 0,
      });
      assert.deepEqual(await woken, { r: 1 });
      await stop();
    } finally {
      await admin.end();
      await b.close();
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
  after(async () => {
    await (server.store as unknown as PostgresStore).dropSchema();
    await server.stop();
  });

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
    await blocker.query('BEGIN');
    await blocker.query('SELECT * FROM agents WHERE id = $1 FOR UPDATE', [agent.id]);
    const stuck = api.claim(agent.id, 1);
    const { eventually } = await import('./helpers.js');
    await eventually(() => (server.store as unknown as PostgresStore).poolStats().inUse === 1, 5_000, 'the connection in use');
    const res = await api.get(`/v1/tasks/${task.id}`);
    assert.equal(res.status, 503);
    assert.equal(res.body.error.code, 'FLEETD_ERR_STORE_UNAVAILABLE');
    assert.equal(res.body.error.details.pool.size, 1);
    await blocker.query('ROLLBACK');
    await blocker.end();
    const claimed = await stuck;
    assert.deepEqual(claimed.map((t) => t.id), [task.id]);
    assert.equal((await api.get(`/v1/tasks/${task.id}`)).status, 200);
  });
});
