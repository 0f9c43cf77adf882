import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { migrations } from '../src/store/sqlite/migrations.js';
import { describe, it } from 'node:test';
import { loadPipelinesFile } from '../src/pipelines/load.js';
import { Api, adminKeyFor, tempDir } from './helpers.js';
import { finishedRun, startPipelineServer } from './fake-llm.js';
import { runFleetd } from './cli-run.js';
import { dropSchema, TEST_DATABASE_URL, uniqueSchema } from './store/postgres.js';

const example = loadPipelinesFile('examples/complaints/pipelines.yaml');
const setup = { providers: example.providers.map((p) => ({ ...p, latency: { minMs: 1, maxMs: 5 }, failureRate: 0 })) as any, pipelines: example.pipelines };

/** What a user of the API sees of a store: every task, agent, key, lock, run and case, and the counts. */
async function viewOf(api: Api) {
  const all = async (path: string) => {
    const items: unknown[] = [];
    for (let cursor: string | null = null; ; ) {
      const page: any = (await api.get(`${path}${path.includes('?') ? '&' : '?'}limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`)).body;
      items.push(...page.items);
      if (!page.nextCursor) return items;
      cursor = page.nextCursor;
    }
  };
  const stats = (await api.get('/v1/stats')).body;
  const cases: any[] = await all('/v1/cases');
  return {
    tasks: (await api.get('/v1/tasks/export')).body,
    agents: await all('/v1/agents'),
    keys: (await api.get('/v1/keys')).body.items,
    locks: await all('/v1/locks'),
    runs: await all('/v1/pipelines/runs'),
    cases: await Promise.all(cases.map(async (c) => (await api.get(`/v1/cases/${c.id}`)).body.case)),
    counts: { tasks: stats.tasks.byStatus, agents: stats.agents.byStatus },
    // A waiting task with the outcome of the dependency that finished, and a schedule.
    waiting: await Promise.all((await all('/v1/tasks?status=waiting')).map(async (t: any) => (await api.get(`/v1/tasks/${t.id}`)).body)),
    schedules: await all('/v1/schedules'),
    namespaces: (await api.get('/v1/namespaces')).body.items,
  };
}

describe('fleetd migrate --to postgres:// (real processes)', { timeout: 120_000 }, () => {
  it('copies a SQLite store into an empty PostgreSQL schema, where it serves the same API', async () => {
    const dataDir = tempDir();
    const schema = uniqueSchema('fleetd_migrate');
    // The key the SQLite server stores; the PostgreSQL server must find the same one among the copied keys.
    const adminKey = adminKeyFor({ dataDir });
    let before: Awaited<ReturnType<typeof viewOf>>;
    let agent: { id: string; token: string };
    let lastTaskId: number;
    const sqliteServer = await startPipelineServer(setup, { dataDir });
    try {
      const { api } = sqliteServer;
      agent = await api.registerAgent(['crawl', 'index'], { labels: { zone: 'eu' } });
      await api.registerAgent(['paint']);
      await api.post('/v1/keys', { name: 'reader', scope: 'read' });
      // A second namespace: a key scoped to it, its quotas, an agent, and a task whose idempotency key default uses too.
      await api.post('/v1/keys', { name: 'team a', scope: 'submit', namespaces: ['team-a'] });
      assert.equal((await api.put('/v1/namespaces/team-a', { quotas: { maxAgents: 5, maxQueuedTasks: 1_000 } })).status, 200);
      await api.registerAgent(['crawl'], { namespace: 'team-a' });
      assert.equal((await api.post('/v1/tasks', { type: 'crawl', namespace: 'team-a', idempotencyKey: 'k-0' })).status, 201);
      // Every seventh payload is long: SQLite keeps those outside their tasks' rows, PostgreSQL in them.
      const text = (i: number) => (i % 7 === 3 ? 'é ✓ "quoted" '.repeat(200) : 'é ✓ "quoted"');
      const tasks = (await api.post('/v1/tasks/batch', {
        tasks: Array.from({ length: 300 }, (_, i) => ({ type: i % 2 ? 'crawl' : 'index', payload: { i, text: text(i) }, priority: i % 5, ...(i % 50 === 0 ? { idempotencyKey: `k-${i}` } : {}) })),
      })).body.items;
      await api.submit({ type: 'crawl', delayMs: 3_600_000 });
      const agentApi = api.as(agent.token);
      const claimed = (await agentApi.post('/v1/tasks/claim', { agentId: agent.id, max: 20 })).body.tasks;
      for (const t of claimed.slice(0, 10)) await agentApi.post(`/v1/tasks/${t.id}/complete`, { agentId: agent.id, result: { ok: t.id } });
      for (const t of claimed.slice(10, 12)) await agentApi.post(`/v1/tasks/${t.id}/fail`, { agentId: agent.id, retryable: false, error: 'no' });
      await api.delete(`/v1/tasks/${tasks.at(-1).task.id}`);
      const join = await api.submit({ type: 'index', parentId: claimed[0].id, dependsOn: [claimed[0].id, tasks[100].task.id] });
      assert.equal(join.status, 'waiting');
      assert.equal((await api.post('/v1/schedules', { name: 'nightly', cron: '0 3 * * *', timezone: 'Europe/Berlin', task: { type: 'crawl' } })).status, 201);
      assert.equal((await agentApi.post('/v1/locks', { agentId: agent.id, resources: ['a.txt', 'b.txt'], ttlMs: 3_600_000 })).status, 200);
      const runs = (await api.post('/v1/pipelines/complaint/runs/batch', {
        runs: ['Bins on Elm Street not collected', 'The bins on Elm Street were not collected', 'Loud noise at the harbour at night'].map((text, i) => ({ input: { text }, idempotencyKey: `c-${i}` })),
      })).body.items;
      // Generous: seven simulated steps a run, on a machine that may be crawling.
      for (const r of runs) assert.equal((await finishedRun(api, r.run.id, 60_000)).status, 'completed');
      before = await viewOf(api);
      lastTaskId = Math.max(...before.tasks.trim().split('\n').map((l: string) => JSON.parse(l).id));
    } finally {
      await sqliteServer.close();
    }

    let pgServer: Awaited<ReturnType<typeof startPipelineServer>> | undefined;
    try {
      const migrated = await runFleetd(['migrate', '--to', TEST_DATABASE_URL, '--schema', schema, '--data-dir', dataDir]);
      assert.equal(migrated.code, 0, migrated.stderr);
      assert.match(migrated.stdout, /^ {2}tasks +303 +303$/m);
      assert.match(migrated.stdout, /^ {2}namespaces +2 +2$/m);
      assert.match(migrated.stdout, /^ {2}task_dependencies +2 +2$/m);
      assert.match(migrated.stdout, /^ {2}schedules +1 +1$/m);
      assert.match(migrated.stdout, /^ {2}case_members +3 +3$/m);

      pgServer = await startPipelineServer(setup, { dataDir: tempDir(), databaseUrl: TEST_DATABASE_URL, databaseSchema: schema, adminKey });
      const pgApi = pgServer.api.as(adminKey);
      const after = await viewOf(pgApi);
      assert.deepEqual(after, before);

      // It goes on working there: the agent's token, the locks it holds, new ids after the copied ones.
      const agentApi = pgApi.as(agent!.token);
      assert.equal((await agentApi.post('/v1/tasks/claim', { agentId: agent!.id, max: 1 })).status, 200);
      assert.equal((await agentApi.post('/v1/locks', { agentId: agent!.id, resources: ['b.txt'], ttlMs: 1000 })).status, 409);
      const next = await pgApi.submit({ type: 'crawl' });
      assert.ok(next.id > lastTaskId!, `new task ${next.id} reuses an id`);
      const again = await pgApi.post('/v1/tasks', { type: 'index', payload: { i: 0, text: 'é ✓ "quoted"' }, priority: 0, idempotencyKey: 'k-0' });
      assert.equal(again.status, 200, 'an idempotency key was forgotten');

      // A second copy into the same schema is refused: the target is not empty.
      const refused = await runFleetd(['migrate', '--to', TEST_DATABASE_URL, '--schema', schema, '--data-dir', dataDir]);
      assert.equal(refused.code, 1);
      assert.match(refused.stderr, /is not empty: its \w+ table has rows/);
    } finally {
      await pgServer?.close();
      await dropSchema(schema);
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it('copies a store an earlier fleetd wrote and this one never opened (its tables of that version)', async () => {
    const dataDir = tempDir();
    const schema = uniqueSchema('fleetd_migrate_old');
    try {
      // A store as the release before per-namespace types left it: migrations up to 18, a policy, a clock.
      const db = new Database(join(dataDir, 'fleetd.db'));
      db.exec('CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)');
      for (const m of migrations.filter((m) => m.version <= 18)) {
        db.exec(m.sql);
        db.prepare('INSERT INTO schema_migrations VALUES (?, ?, ?)').run(m.version, m.name, 0);
      }
      db.exec(`INSERT INTO type_policies VALUES ('llm', '{"maxConcurrency":2,"maxConcurrencyPerKey":null,"rateLimit":null,"keyWeights":{}}', 5);
        INSERT INTO fair_keys VALUES ('k', 3.5); UPDATE fair_clock SET clock = 3;`);
      db.close();

      const copied = await runFleetd(['migrate', '--to', TEST_DATABASE_URL, '--schema', schema, '--data-dir', dataDir]);
      assert.equal(copied.code, 0, copied.stderr);
      const client = new pg.Client({ connectionString: TEST_DATABASE_URL });
      await client.connect();
      try {
        const policies = (await client.query(`SELECT namespace, type FROM ${schema}.type_policies`)).rows;
        assert.deepEqual(policies, [{ namespace: 'default', type: 'llm' }]);
        assert.deepEqual((await client.query(`SELECT namespace, ckey, pass FROM ${schema}.fair_keys`)).rows, [{ namespace: 'default', ckey: 'k', pass: 3.5 }]);
      } finally {
        await client.end();
      }
    } finally {
      await dropSchema(schema);
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
