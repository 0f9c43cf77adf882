import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { T0, eachTest, type DriverFactory } from './harness.js';

/** API keys: stored by hash, the first admin key once, revocation. */
export function exerciseKeys(factory: DriverFactory): void {
  describe('keys', () => {
    const h = eachTest(factory);

    it('StoresApiKeysByHashCreatesTheFirstOnlyOnceAndRevokesThem', async () => {
      const { store } = h;
      const first = await store.apiKeyInsert({ id: 'k1', name: 'first', scope: 'admin', hash: 'h1', namespaces: ['*'], now: T0, onlyIfNone: true });
      assert.deepEqual(first, { id: 'k1', name: 'first', scope: 'admin', namespaces: ['*'], createdAt: T0, revokedAt: null, expiresAt: null, rotatedAt: null, previousSecretExpiresAt: null });
      // A second "first" key is refused once any key exists; an ordinary one is not.
      assert.equal(await store.apiKeyInsert({ id: 'k2', name: 'again', scope: 'admin', hash: 'h2', namespaces: ['*'], now: T0, onlyIfNone: true }), undefined);
      await store.apiKeyInsert({ id: 'k3', name: 'reader', scope: 'read', hash: 'h3', namespaces: ['*'], now: T0 + 1 });
      assert.equal((await store.apiKeyByHash({ hash: 'h3' }))?.key.scope, 'read');
      assert.equal(await store.apiKeyByHash({ hash: 'h2' }), undefined);
      assert.equal((await store.apiKeyRevoke({ id: 'k3', now: T0 + 5 }))?.revokedAt, T0 + 5);
      assert.equal((await store.apiKeyRevoke({ id: 'k3', now: T0 + 9 }))?.revokedAt, T0 + 5);
      assert.equal(await store.apiKeyByHash({ hash: 'h3' }), undefined);
      assert.equal(await store.apiKeyRevoke({ id: 'nope', now: T0 }), undefined);
      assert.deepEqual((await store.apiKeyList()).map((k) => [k.id, k.revokedAt]), [['k1', null], ['k3', T0 + 5]]);
    });

    it('StoresAKeysExpiryAndFindsItByEitherSecretAfterARotation', async () => {
      const { store } = h;
      const key = await store.apiKeyInsert({ id: 'k1', name: 'ci', scope: 'submit', hash: 'old', namespaces: ['*'], now: T0, expiresAt: T0 + 1_000 });
      assert.equal(key?.expiresAt, T0 + 1_000);
      // The driver only finds; whether a secret is still good is core's to decide.
      assert.deepEqual(await store.apiKeyByHash({ hash: 'old' }), { key, secret: 'current' });

      const rotated = await store.apiKeyRotate({ id: 'k1', hash: 'new', now: T0 + 10, previousExpiresAt: T0 + 60 });
      assert.deepEqual(rotated, { ...key, rotatedAt: T0 + 10, previousSecretExpiresAt: T0 + 60 });
      assert.deepEqual(await store.apiKeyByHash({ hash: 'new' }), { key: rotated, secret: 'current' });
      assert.deepEqual(await store.apiKeyByHash({ hash: 'old' }), { key: rotated, secret: 'previous' });

      // A second rotation keeps one previous secret only, and may move the expiry (or drop it).
      const again = await store.apiKeyRotate({ id: 'k1', hash: 'newer', now: T0 + 20, previousExpiresAt: T0 + 80, expiresAt: null });
      assert.equal(again?.expiresAt, null);
      assert.equal(again?.previousSecretExpiresAt, T0 + 80);
      assert.equal(await store.apiKeyByHash({ hash: 'old' }), undefined);
      assert.equal((await store.apiKeyByHash({ hash: 'new' }))?.secret, 'previous');
      const later = await store.apiKeyRotate({ id: 'k1', hash: 'newest', now: T0 + 30, previousExpiresAt: T0 + 90, expiresAt: T0 + 5_000 });
      assert.equal(later?.expiresAt, T0 + 5_000);

      // Neither secret of a revoked key is found, and a revoked or unknown key is not rotated.
      await store.apiKeyRevoke({ id: 'k1', now: T0 + 40 });
      assert.equal(await store.apiKeyByHash({ hash: 'newest' }), undefined);
      assert.equal(await store.apiKeyByHash({ hash: 'newer' }), undefined);
      assert.equal(await store.apiKeyRotate({ id: 'k1', hash: 'x', now: T0 + 50, previousExpiresAt: T0 + 60 }), undefined);
      assert.equal(await store.apiKeyRotate({ id: 'nope', hash: 'y', now: T0 + 50, previousExpiresAt: T0 + 60 }), undefined);
      assert.equal(await store.apiKeyByHash({ hash: 'x' }), undefined);
    });

    it('ScopesAKeyToNamespacesAndKnowsEachNamespaceAKeyNamesWithItsQuotas', async () => {
      const { store } = h;
      assert.deepEqual((await store.namespaceList()).map((n) => n.name), ['default']);
      const key = await store.apiKeyInsert({ id: 'k1', name: 'team a', scope: 'submit', hash: 'ha', namespaces: ['team-a', 'shared'], now: T0 });
      assert.deepEqual(key?.namespaces, ['team-a', 'shared']);
      assert.deepEqual((await store.apiKeyByHash({ hash: 'ha' }))?.key.namespaces, ['team-a', 'shared']);
      // A key naming a known namespace leaves it as it was; `*` is no namespace of its own.
      await store.namespacePut({ name: 'shared', quotas: { maxQueuedTasks: 10, maxTasksPerSecond: null, maxAgents: 2 }, now: T0 + 1 });
      await store.apiKeyInsert({ id: 'k2', name: 'all', scope: 'admin', hash: 'hb', namespaces: ['*'], now: T0 + 2 });
      await store.apiKeyInsert({ id: 'k3', name: 'shared too', scope: 'read', hash: 'hc', namespaces: ['shared'], now: T0 + 3 });
      assert.deepEqual(
        (await store.namespaceList()).map((n) => [n.name, n.createdAt, n.quotas.maxQueuedTasks]),
        [['default', 0, null], ['shared', T0, 10], ['team-a', T0, null]],
      );
      const updated = await store.namespacePut({ name: 'shared', quotas: { maxQueuedTasks: null, maxTasksPerSecond: 5, maxAgents: null }, now: T0 + 9 });
      assert.deepEqual(updated, { name: 'shared', quotas: { maxQueuedTasks: null, maxTasksPerSecond: 5, maxAgents: null }, createdAt: T0, updatedAt: T0 + 9 });
      assert.deepEqual(await store.namespaceGet({ name: 'shared' }), updated);
      assert.equal(await store.namespaceGet({ name: 'nope' }), undefined);
      // A refused first key makes no namespace known.
      assert.equal(await store.apiKeyInsert({ id: 'k4', name: 'late', scope: 'admin', hash: 'hd', namespaces: ['ghost'], now: T0, onlyIfNone: true }), undefined);
      assert.equal(await store.namespaceGet({ name: 'ghost' }), undefined);
    });
  });
}
