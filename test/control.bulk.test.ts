import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import type { FleetdConfig } from '../src/config.js';
import { FleetClient, TaskRevokedError } from '../src/client/index.js';
import { drivers, startTestServer, stopAndDrop, type TestServer } from './helpers.js';

for (const [driver, store] of Object.entries(drivers)) {
  describe(`bulk actions on tasks (${driver})`, { timeout: 120_000 }, () => {
    let server: TestServer;
    let storeConfig: Partial<FleetdConfig>;

    before(async () => {
      storeConfig = store();
      server = await startTestServer({ ...storeConfig, taskBackoffMs: 10 });
    });
    after(async () => {
      if (server) await stopAndDrop(server);
    });

    /** Counts of one type's tasks by status, through the public list. */
    async function statuses(type: string): Promise<Record<string, number>> {
      const counts: Record<string, number> = {};
      for (const t of (await server.api.get(`/v1/tasks?type=${type}&limit=1000`)).body.items) counts[t.status] = (counts[t.status] ?? 0) + 1;
      return counts;
    }

    it('retries the dead tasks a filter matches, after a dry run that changes nothing', async () => {
      const api = server.api;
      const agent = await api.registerAgent(['bulk-retry'], { maxConcurrency: 100 });
      await api.post('/v1/tasks/batch', { tasks: Array.from({ length: 12 }, (_, i) => ({ type: 'bulk-retry', payload: { i }, maxAttempts: 1 })) });
      const claimed = await api.claim(agent.id, 10);
      for (const t of claimed.slice(0, 7)) await api.post(`/v1/tasks/${t.id}/fail`, { agentId: agent.id, error: { why: 'flaky' } });
      for (const t of claimed.slice(7)) await api.post(`/v1/tasks/${t.id}/complete`, { agentId: agent.id });
      assert.deepEqual(await statuses('bulk-retry'), { dead: 7, completed: 3, queued: 2 });

      const dry = await api.post('/v1/tasks/bulk', { action: 'retry', filter: { type: 'bulk-retry' }, dryRun: true });
      assert.equal(dry.status, 200, JSON.stringify(dry.body));
      assert.deepEqual(dry.body, { matched: 12, eligible: 7, changed: 0, dryRun: true });
      assert.deepEqual(await statuses('bulk-retry'), { dead: 7, completed: 3, queued: 2 }, 'a dry run changes nothing');

      const done = await api.post('/v1/tasks/bulk', { action: 'retry', filter: { type: 'bulk-retry', status: 'dead' } });
      assert.deepEqual(done.body, { matched: 7, eligible: 7, changed: 7, dryRun: false });
      assert.deepEqual(await statuses('bulk-retry'), { queued: 9, completed: 3 });
      const again = await api.claim(agent.id, 20);
      assert.equal(again.length, 9, 'the retried tasks are claimable, attempts reset');
      assert.ok(again.every((t: { attempts: number }) => t.attempts === 1));
    });

    it('cancels what a filter matches, telling a running agent to stop; deletes finished tasks created before a time', async () => {
      const client = new FleetClient({ url: server.url, apiKey: server.adminKey });
      const agent = client.agent({ name: 'bulk', capabilities: ['bulk-cancel'], concurrency: 1 });
      let reason: unknown;
      const started = new Promise<void>((resolve) =>
        void agent.work(
          (_task, { signal }) =>
            new Promise((_, reject) => {
              resolve();
              signal.addEventListener('abort', () => ((reason = signal.reason), reject(signal.reason)), { once: true });
            }),
        ),
      );
      try {
        await server.api.post('/v1/tasks/batch', { tasks: Array.from({ length: 5 }, () => ({ type: 'bulk-cancel', leaseMs: 60_000 })) });
        await started;
        const cancelled = once(agent, 'cancelled');
        const answer = await server.api.post('/v1/tasks/bulk', { action: 'cancel', filter: { type: 'bulk-cancel' } });
        assert.deepEqual(answer.body, { matched: 5, eligible: 5, changed: 5, dryRun: false });
        await cancelled;
        assert.ok(reason instanceof TaskRevokedError, String(reason));
        assert.equal(reason.code, 'FLEETD_ERR_CANCELLED');
        assert.deepEqual(await statuses('bulk-cancel'), { cancelled: 5 });
      } finally {
        await agent.stop({ timeoutMs: 1_000 });
      }

      const cutoff = new Date(Date.now() + 1).toISOString();
      await new Promise((r) => setTimeout(r, 20));
      const later = await server.api.submit({ type: 'bulk-cancel' });
      await server.api.delete(`/v1/tasks/${later.id}`);
      const deleted = await server.api.post('/v1/tasks/bulk', { action: 'delete', filter: { type: 'bulk-cancel', createdBefore: cutoff } });
      assert.deepEqual(deleted.body, { matched: 5, eligible: 5, changed: 5, dryRun: false });
      assert.deepEqual(await statuses('bulk-cancel'), { cancelled: 1 }, 'the one created after the cutoff stays');
      assert.equal((await server.api.get(`/v1/tasks/${later.id}`)).status, 200);
    });

    it('refuses a missing filter, bad actions and filters, and a non-admin key, changing nothing', async () => {
      const api = server.api;
      await api.submit({ type: 'bulk-bad' });
      const before = await statuses('bulk-bad');
      const missing = await api.post('/v1/tasks/bulk', { action: 'cancel' });
      assert.equal(missing.status, 400);
      assert.equal(missing.body.error.code, 'FLEETD_ERR_VALIDATION');
      assert.equal(missing.body.error.details.field, 'filter');
      assert.match(missing.body.error.message, /filter: \{\}/);
      for (const body of [
        { action: 'purge', filter: {} },
        { action: 'cancel', filter: { status: 'done' } },
        { action: 'cancel', filter: { type: '' } },
        { action: 'cancel', filter: { createdBefore: 'yesterday' } },
        { action: 'cancel', filter: { tags: ['x'] } },
        { action: 'cancel', filter: {}, dryRun: 'yes' },
        { action: 'cancel', filter: [] },
      ]) {
        const reply = await api.post('/v1/tasks/bulk', body);
        assert.equal(reply.status, 400, `${JSON.stringify(body)}: ${JSON.stringify(reply.body)}`);
        assert.equal(reply.body.error.code, 'FLEETD_ERR_VALIDATION');
      }
      const key = await api.post('/v1/keys', { name: 'submitter', scope: 'submit' });
      const forbidden = await api.as(key.body.secret).post('/v1/tasks/bulk', { action: 'cancel', filter: {} });
      assert.equal(forbidden.status, 403);
      assert.deepEqual(await statuses('bulk-bad'), before, 'nothing changed');

      const everything = await api.post('/v1/tasks/bulk', { action: 'cancel', filter: {}, dryRun: true });
      assert.equal(everything.status, 200, 'filter: {} said on purpose is every task');
      assert.ok(everything.body.matched >= 1);
      assert.deepEqual(await statuses('bulk-bad'), before, 'a dry run of everything changed nothing');
    });
  });
}
