import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { FleetdConfig } from '../src/config.js';
import { drivers, startTestServer, stopAndDrop, type TestServer } from './helpers.js';

for (const [driver, store] of Object.entries(drivers)) {
  describe(`tags and metadata on tasks (${driver})`, { timeout: 60_000 }, () => {
    let server: TestServer;
    let storeConfig: Partial<FleetdConfig>;
    before(async () => {
      storeConfig = store();
      server = await startTestServer(storeConfig);
    });
    after(async () => {
      if (server) await stopAndDrop(server);
    });

    it('keeps them, lists a tag\u2019s tasks, and acts in bulk on a tag', async () => {
      const api = server.api;
      const a = await api.submit({ type: 'tagged', tags: ['invoice', 'customer:acme'], metadata: { requestedBy: 'ana', batch: 7 } });
      const b = await api.submit({ type: 'tagged', tags: ['invoice', 'invoice'] });
      await api.submit({ type: 'tagged' });
      assert.deepEqual([a.tags, a.metadata], [['invoice', 'customer:acme'], { requestedBy: 'ana', batch: 7 }]);
      assert.deepEqual(b.tags, ['invoice'], 'a tag once');
      assert.deepEqual((await api.get(`/v1/tasks/${a.id}`)).body.metadata, { requestedBy: 'ana', batch: 7 });
      const listed = (await api.get('/v1/tasks?tag=invoice')).body.items.map((t: { id: number }) => t.id);
      assert.deepEqual(listed, [b.id, a.id]);
      assert.deepEqual((await api.get('/v1/tasks?tag=customer:acme&type=tagged')).body.items.map((t: { id: number }) => t.id), [a.id]);
      const cancelled = await api.post('/v1/tasks/bulk', { action: 'cancel', filter: { tag: 'customer:acme' } });
      assert.deepEqual(cancelled.body, { matched: 1, eligible: 1, changed: 1, dryRun: false });
      assert.equal((await api.get(`/v1/tasks/${b.id}`)).body.status, 'queued');
    });

    it('refuses too many or malformed tags and oversized or non-object metadata, storing nothing', async () => {
      const api = server.api;
      const cases: [unknown, number, string][] = [
        [{ tags: Array.from({ length: 17 }, (_, i) => `t${i}`) }, 400, 'FLEETD_ERR_VALIDATION'],
        [{ tags: ['has space'] }, 400, 'FLEETD_ERR_VALIDATION'],
        [{ tags: [''] }, 400, 'FLEETD_ERR_VALIDATION'],
        [{ tags: ['x'.repeat(65)] }, 400, 'FLEETD_ERR_VALIDATION'],
        [{ tags: 'invoice' }, 400, 'FLEETD_ERR_VALIDATION'],
        [{ metadata: ['a'] }, 400, 'FLEETD_ERR_VALIDATION'],
        [{ metadata: 'text' }, 400, 'FLEETD_ERR_VALIDATION'],
        [{ metadata: { big: 'x'.repeat(17_000) } }, 413, 'FLEETD_ERR_PAYLOAD_TOO_LARGE'],
      ];
      for (const [extra, status, code] of cases) {
        const reply = await api.post('/v1/tasks', { type: 'tag-bad', ...(extra as object) });
        assert.equal(reply.status, status, `${JSON.stringify(extra).slice(0, 80)}: ${JSON.stringify(reply.body)}`);
        assert.equal(reply.body.error.code, code);
      }
      const big = await api.post('/v1/tasks', { type: 'tag-bad', metadata: { big: 'x'.repeat(17_000) } });
      assert.equal(big.body.error.details.field, 'metadata');
      assert.equal(big.body.error.details.maxBytes, 16_384);
      assert.equal((await api.get('/v1/tasks?type=tag-bad')).body.items.length, 0);
      const badFilter = await api.get('/v1/tasks?tag=has%20space');
      assert.equal(badFilter.status, 400);
    });
  });
}
