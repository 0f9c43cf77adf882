import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { T0, eachTest, type DriverFactory } from './harness.js';

/** API keys: stored by hash, the first admin key once, revocation. */
export function exerciseKeys(factory: DriverFactory): void {
  describe('keys', () => {
    const h = eachTest(factory);

    it('StoresApiKeysByHashCreatesTheFirstOnlyOnceAndRevokesThem', async () => {
      const { store } = h;
      const first = await store.apiKeyInsert({ id: 'k1', name: 'first', scope: 'admin', hash: 'h1', now: T0, onlyIfNone: true });
      assert.deepEqual(first, { id: 'k1', name: 'first', scope: 'admin', createdAt: T0, revokedAt: null });
      // A second "first" key is refused once any key exists; an ordinary one is not.
      assert.equal(await store.apiKeyInsert({ id: 'k2', name: 'again', scope: 'admin', hash: 'h2', now: T0, onlyIfNone: true }), undefined);
      await store.apiKeyInsert({ id: 'k3', name: 'reader', scope: 'read', hash: 'h3', now: T0 + 1 });
      assert.equal((await store.apiKeyByHash({ hash: 'h3' }))?.scope, 'read');
      assert.equal(await store.apiKeyByHash({ hash: 'h2' }), undefined);
      assert.equal((await store.apiKeyRevoke({ id: 'k3', now: T0 + 5 }))?.revokedAt, T0 + 5);
      assert.equal((await store.apiKeyRevoke({ id: 'k3', now: T0 + 9 }))?.revokedAt, T0 + 5);
      assert.equal(await store.apiKeyByHash({ hash: 'h3' }), undefined);
      assert.equal(await store.apiKeyRevoke({ id: 'nope', now: T0 }), undefined);
      assert.deepEqual((await store.apiKeyList()).map((k) => [k.id, k.revokedAt]), [['k1', null], ['k3', T0 + 5]]);
    });
  });
}
