import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { T0, eachTest, type DriverFactory } from './harness.js';

/** The audit log: appended, listed newest first with filters and pages, swept by age. */
export function exerciseAudit(factory: DriverFactory): void {
  describe('audit', () => {
    const h = eachTest(factory);

    it('AppendsAuditEntriesAndListsThemNewestFirstWithFiltersAndPages', async () => {
      const { store } = h;
      const first = await store.auditInsert({ at: T0, actor: 'key:k1', address: '10.0.0.7', action: 'key.created', target: 'key:k2', details: { scope: 'read', name: 'ünïcode ✓' } });
      assert.equal(typeof first.id, 'number');
      assert.deepEqual(first, { id: first.id, at: T0, actor: 'key:k1', address: '10.0.0.7', action: 'key.created', target: 'key:k2', details: { scope: 'read', name: 'ünïcode ✓' } });
      await store.auditInsert({ at: T0 + 10, actor: 'key:k1', address: '10.0.0.7', action: 'task.cancelled', target: 'task:1', details: {} });
      await store.auditInsert({ at: T0 + 20, actor: 'cli', address: null, action: 'key.revoked', target: 'key:k2', details: {} });
      await store.auditInsert({ at: T0 + 30, actor: 'agent:a1', address: '10.0.0.8', action: 'task.retried', target: 'task:1', details: {} });

      const all = await store.auditList({ limit: 10 });
      assert.deepEqual(all.items.map((e) => e.at), [T0 + 30, T0 + 20, T0 + 10, T0]);
      assert.equal(all.nextCursor, null);
      assert.deepEqual((await store.auditList({ limit: 10, target: 'key:k2' })).items.map((e) => e.action), ['key.revoked', 'key.created']);
      assert.deepEqual((await store.auditList({ limit: 10, actor: 'key:k1', action: 'task.cancelled' })).items.map((e) => e.target), ['task:1']);
      assert.deepEqual((await store.auditList({ limit: 10, since: T0 + 10, until: T0 + 30 })).items.map((e) => e.at), [T0 + 20, T0 + 10]);
      assert.equal((await store.auditList({ limit: 10, actor: 'nobody' })).items.length, 0);

      const page1 = await store.auditList({ limit: 3 });
      assert.equal(page1.items.length, 3);
      assert.ok(page1.nextCursor);
      const page2 = await store.auditList({ limit: 3, cursor: page1.nextCursor! });
      assert.deepEqual(page2.items.map((e) => e.at), [T0]);
      assert.equal(page2.nextCursor, null);
    });

    it('DeletesAuditEntriesOlderThanACutOffABatchAtATime', async () => {
      const { store } = h;
      for (let i = 0; i < 5; i++) await store.auditInsert({ at: T0 + i, actor: 'cli', address: null, action: 'key.created', target: `key:k${i}`, details: {} });
      assert.equal(await store.auditDeleteBefore({ before: T0 + 3, limit: 2 }), 2);
      assert.equal(await store.auditDeleteBefore({ before: T0 + 3, limit: 2 }), 1);
      assert.equal(await store.auditDeleteBefore({ before: T0 + 3, limit: 2 }), 0);
      assert.deepEqual((await store.auditList({ limit: 10 })).items.map((e) => e.target), ['key:k4', 'key:k3']);
    });
  });
}
