import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startPipelineServer } from './fake-llm.js';
import { eventually, startTestServer, type TestServer } from './helpers.js';
import { dropSchema, TEST_DATABASE_URL, uniqueSchema } from './store/postgres.js';

const code = (res: { body: any }) => res.body?.error?.code;

for (const driver of ['sqlite', 'postgres'] as const) {
  describe(`audit log (${driver})`, () => {
    let server: TestServer;
    const schema = uniqueSchema('fleetd_audit');

    before(async () => {
      server = await startPipelineServer(
        { pipelines: [{ name: 'slow', steps: [{ name: 'wait', kind: 'code', fn: 'wait' }] }], functions: { wait: () => new Promise((r) => setTimeout(r, 60_000)) } },
        driver === 'postgres' ? { databaseUrl: TEST_DATABASE_URL, databaseSchema: schema } : {},
      );
    });
    after(async () => {
      await server?.stop();
      if (driver !== 'postgres') return;
      await dropSchema(schema);
    });

    it('records every administrative and destructive act with who, when, what and from where', async () => {
      const admin = server.api;
      const adminId = (await admin.get('/v1/keys')).body.items[0].id as string;
      const started = Date.now();

      const made = await admin.post('/v1/keys', { name: 'ops', scope: 'submit' });
      const ops = admin.as(made.body.secret);
      const opsId = made.body.key.id as string;
      await admin.post(`/v1/keys/${opsId}/rotate`, { graceMs: 60_000 });
      const task = await ops.submit({ type: 'audit.me' });
      assert.equal((await ops.delete(`/v1/tasks/${task.id}`)).status, 200);
      assert.equal((await ops.post(`/v1/tasks/${task.id}/retry`)).status, 200);
      const agent = await admin.registerAgent(['audit.me']);
      const lock = await admin.post('/v1/locks', { agentId: agent.id, resources: ['a.txt'], ttlMs: 60_000 });
      assert.equal((await admin.delete(`/v1/locks/${lock.body.id}`)).status, 200);
      // An agent letting go of its own lock is routine: not audited.
      const own = await admin.post('/v1/locks', { agentId: agent.id, resources: ['b.txt'], ttlMs: 60_000 });
      assert.equal((await admin.as(agent.token).delete(`/v1/locks/${own.body.id}?agentId=${agent.id}`)).status, 200);
      assert.equal((await admin.delete(`/v1/agents/${agent.id}`)).status, 200);
      const run = await admin.post('/v1/pipelines/slow/runs', { input: {} });
      assert.equal(run.status, 201, JSON.stringify(run.body));
      assert.equal((await admin.post(`/v1/pipelines/runs/${run.body.run.id}/cancel`)).status, 200);
      assert.equal((await admin.delete(`/v1/keys/${opsId}`)).status, 200);
      // Revoking it again changes nothing, and is not recorded again.
      assert.equal((await admin.delete(`/v1/keys/${opsId}`)).status, 200);
      // Refused acts are not recorded: they did not happen.
      assert.equal((await admin.delete(`/v1/tasks/${task.id + 1000}`)).status, 404);

      const res = await admin.get('/v1/audit?limit=100');
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('cache-control'), 'no-store');
      const entries = [...res.body.items].reverse();
      assert.deepEqual(
        entries.map((e: any) => [e.action, e.actor, e.target]),
        [
          ['key.created', `key:${adminId}`, `key:${opsId}`],
          ['key.rotated', `key:${adminId}`, `key:${opsId}`],
          ['task.cancelled', `key:${opsId}`, `task:${task.id}`],
          ['task.retried', `key:${opsId}`, `task:${task.id}`],
          ['lock.released', `key:${adminId}`, `lock:${lock.body.id}`],
          ['agent.removed', `key:${adminId}`, `agent:${agent.id}`],
          ['pipeline.run.cancelled', `key:${adminId}`, `run:${run.body.run.id}`],
          ['key.revoked', `key:${adminId}`, `key:${opsId}`],
        ],
      );
      for (const e of entries) {
        assert.equal(e.address, '127.0.0.1');
        assert.ok(Date.parse(e.at) >= started - 1_000 && Date.parse(e.at) <= Date.now() + 1_000, e.at);
      }
      assert.deepEqual(entries[0].details, { name: 'ops', scope: 'submit', namespaces: ['*'], expiresAt: null });
      assert.equal(entries[1].details.graceMs, 60_000);
      assert.equal(entries[2].details.type, 'audit.me');
      assert.deepEqual(entries[4].details.resources, ['a.txt']);
      // No secret ever reaches the log.
      assert.ok(!JSON.stringify(res.body).includes('fk_'));
    });

    it('records bulk changes, pipelines defined and deleted, approvals and schedules', async () => {
      const admin = server.api;
      const started = new Date().toISOString();
      const task = await admin.submit({ type: 'audit.bulk', tags: ['audit-bulk'] });
      // A dry run changes nothing, so it records nothing.
      assert.equal((await admin.post('/v1/tasks/bulk', { action: 'cancel', filter: { tag: 'audit-bulk' }, dryRun: true })).body.changed, 0);
      assert.equal((await admin.post('/v1/tasks/bulk', { action: 'cancel', filter: { tag: 'audit-bulk' } })).body.changed, 1);
      const defined = await admin.request('PUT', '/v1/pipelines/audit-review', { steps: [{ name: 'ok', kind: 'approval', prompt: 'Ship it?' }] });
      assert.equal(defined.status, 201, JSON.stringify(defined.body));
      const run = (await admin.post('/v1/pipelines/audit-review/runs', { input: {} })).body.run;
      await eventually(async () => (await admin.get(`/v1/pipelines/runs/${run.id}/steps/ok/approval`)).body.waiting === true);
      assert.equal((await admin.post(`/v1/pipelines/runs/${run.id}/steps/ok/approve`, { comment: 'lgtm' })).status, 200);
      assert.equal((await admin.delete('/v1/pipelines/audit-review')).status, 200);
      assert.equal((await admin.post('/v1/schedules', { name: 'audit-nightly', cron: '0 3 * * *', task: { type: 'audit.me' } })).status, 201);
      assert.equal((await admin.delete('/v1/schedules/audit-nightly')).status, 200);

      const entries = [...(await admin.get(`/v1/audit?since=${encodeURIComponent(started)}&limit=100`)).body.items].reverse();
      assert.deepEqual(
        entries.map((e: any) => [e.action, e.target]),
        [
          ['tasks.bulk', 'tasks:cancel'],
          ['pipeline.defined', 'pipeline:audit-review'],
          ['pipeline.step.approved', `run:${run.id}`],
          ['pipeline.deleted', 'pipeline:audit-review'],
          ['schedule.created', 'schedule:audit-nightly'],
          ['schedule.deleted', 'schedule:audit-nightly'],
        ],
      );
      assert.equal(entries[0].details.changed, 1);
      assert.deepEqual(entries[2].details, { pipeline: 'audit-review', step: 'ok', comment: 'lgtm' });
      assert.equal((await admin.get(`/v1/tasks/${task.id}`)).body.status, 'cancelled');
    });

    it('filters by action, actor, target and time, and pages by cursor', async () => {
      const admin = server.api;
      for (let i = 0; i < 5; i++) await admin.post('/v1/keys', { name: `bulk-${i}`, scope: 'read' });
      const created = (await admin.get('/v1/audit?action=key.created&limit=100')).body.items;
      assert.ok(created.length >= 6);
      assert.ok(created.every((e: any) => e.action === 'key.created'));
      const target = created[0].target;
      assert.deepEqual((await admin.get(`/v1/audit?target=${encodeURIComponent(target)}`)).body.items.map((e: any) => e.target), [target]);
      const byActor = (await admin.get(`/v1/audit?actor=${encodeURIComponent(created[0].actor)}&limit=1000`)).body.items;
      assert.ok(byActor.length >= 6 && byActor.every((e: any) => e.actor === created[0].actor));
      const newest = created[0].at;
      assert.deepEqual((await admin.get(`/v1/audit?since=${encodeURIComponent(newest)}&action=key.created`)).body.items.map((e: any) => e.target), [target]);
      assert.ok((await admin.get(`/v1/audit?until=${encodeURIComponent(newest)}&action=key.created`)).body.items.every((e: any) => e.at < newest));

      const seen: number[] = [];
      let cursor: string | null = null;
      do {
        const page: any = await admin.get(`/v1/audit?limit=2${cursor ? `&cursor=${cursor}` : ''}`);
        assert.equal(page.status, 200);
        assert.ok(page.body.items.length <= 2);
        seen.push(...page.body.items.map((e: any) => e.id));
        cursor = page.body.nextCursor;
      } while (cursor);
      const all = (await admin.get('/v1/audit?limit=1000')).body.items.map((e: any) => e.id);
      assert.deepEqual(seen, all);
      assert.deepEqual([...all].sort((a: number, b: number) => b - a), all);
    });

    it('answers bad filters with 400, and anyone but an admin with 401 or 403', async () => {
      const admin = server.api;
      for (const query of ['action=key.stolen', 'since=yesterday', 'until=2026-13-01T00:00:00Z', 'limit=0', 'limit=1001', 'cursor=bm90LWEtY3Vyc29y', 'color=red', 'since=2026-12-02T10:00:00Z&until=2026-12-02T09:00:00Z']) {
        const res = await admin.get(`/v1/audit?${query}`);
        assert.equal(res.status, 400, query);
        assert.equal(code(res), 'FLEETD_ERR_VALIDATION', query);
      }
      const reader = admin.as((await admin.post('/v1/keys', { name: 'peek', scope: 'read' })).body.secret);
      assert.equal((await reader.get('/v1/audit')).status, 403);
      assert.equal((await admin.as(undefined).get('/v1/audit')).status, 401);
    });
  });
}

describe('audit log retention and actors', () => {
  it('sweeps entries older than FLEETD_AUDIT_RETENTION_MS, and names the actor anonymous with auth off', async () => {
    const server = await startTestServer({ auditRetentionMs: 1_000, auth: 'off' });
    try {
      const task = await server.api.submit({ type: 'swept' });
      assert.equal((await server.api.delete(`/v1/tasks/${task.id}`)).status, 200);
      const [entry] = (await server.api.get('/v1/audit')).body.items;
      assert.equal(entry.actor, 'anonymous');
      assert.equal(entry.action, 'task.cancelled');
      await new Promise((r) => setTimeout(r, 1_100));
      // The cleaner runs once a minute; poking it runs it now.
      server.fleet.timers.auditCleaner.poke(Date.now());
      await eventually(async () => (await server.api.get('/v1/audit')).body.items.length === 0, 5_000, 'the old entry to be swept');
    } finally {
      await server.stop();
    }
  });
});
