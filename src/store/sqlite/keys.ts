import { ALL_NAMESPACES } from '../../domain/namespaces.js';
import { toApiKey, toNamespace, type ApiKeyRow, type NamespaceRow } from '../rows.js';
import type { KeyStore, NamespaceStore } from '../store.js';
import type { SqliteDatabase } from './database.js';

/** The API keys and namespaces area of the SQLite driver. */
export function sqliteKeys({ db, groupCommit }: SqliteDatabase): KeyStore & NamespaceStore {
  const s = {
    insert: db.prepare(`INSERT INTO api_keys (id, name, scope, hash, namespaces, created_at, expires_at) SELECT @id, @name, @scope, @hash, @namespaces, @now, @expires_at
        WHERE @only_if_none = 0 OR NOT EXISTS (SELECT 1 FROM api_keys) RETURNING *`),
    knowNamespace: db.prepare('INSERT INTO namespaces (name, created_at, updated_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING'),
    namespaceList: db.prepare('SELECT * FROM namespaces ORDER BY name'),
    namespaceGet: db.prepare('SELECT * FROM namespaces WHERE name = ?'),
    namespacePut: db.prepare(`INSERT INTO namespaces (name, quotas, created_at, updated_at) VALUES (@name, @quotas, @now, @now)
        ON CONFLICT (name) DO UPDATE SET quotas = excluded.quotas, updated_at = excluded.updated_at RETURNING *`),
    byHash: db.prepare('SELECT * FROM api_keys WHERE (hash = @hash OR previous_hash = @hash) AND revoked_at IS NULL'),
    rotate: db.prepare(`UPDATE api_keys SET previous_hash = hash, previous_expires_at = @previous_expires_at, hash = @hash, rotated_at = @now,
        expires_at = CASE WHEN @set_expiry = 1 THEN @expires_at ELSE expires_at END
        WHERE id = @id AND revoked_at IS NULL RETURNING *`),
    list: db.prepare('SELECT * FROM api_keys ORDER BY created_at, id'),
    revoke: db.prepare('UPDATE api_keys SET revoked_at = coalesce(revoked_at, @now) WHERE id = @id RETURNING *'),
  };
  return {
    apiKeyInsert(params) {
      return groupCommit.write(() => {
        const row = s.insert.get({
          id: params.id,
          name: params.name,
          scope: params.scope,
          hash: params.hash,
          namespaces: JSON.stringify(params.namespaces),
          now: params.now,
          only_if_none: params.onlyIfNone ? 1 : 0,
          expires_at: params.expiresAt ?? null,
        }) as ApiKeyRow | undefined;
        if (row) for (const name of params.namespaces) if (name !== ALL_NAMESPACES) s.knowNamespace.run(name, params.now, params.now);
        return row && toApiKey(row);
      });
    },

    async apiKeyByHash(params) {
      const row = s.byHash.get({ hash: params.hash }) as ApiKeyRow | undefined;
      return row && { key: toApiKey(row), secret: row.hash === params.hash ? 'current' : 'previous' };
    },

    async apiKeyList() {
      return (s.list.all() as ApiKeyRow[]).map(toApiKey);
    },

    apiKeyRevoke(params) {
      return groupCommit.write(() => {
        const row = s.revoke.get(params) as ApiKeyRow | undefined;
        return row && toApiKey(row);
      });
    },

    apiKeyRotate(params) {
      return groupCommit.write(() => {
        const row = s.rotate.get({
          id: params.id,
          hash: params.hash,
          now: params.now,
          previous_expires_at: params.previousExpiresAt,
          set_expiry: params.expiresAt === undefined ? 0 : 1,
          expires_at: params.expiresAt ?? null,
        }) as ApiKeyRow | undefined;
        return row && toApiKey(row);
      });
    },

    async namespaceList() {
      return (s.namespaceList.all() as NamespaceRow[]).map(toNamespace);
    },

    async namespaceGet(params) {
      const row = s.namespaceGet.get(params.name) as NamespaceRow | undefined;
      return row && toNamespace(row);
    },

    namespacePut(params) {
      return groupCommit.write(() => toNamespace(s.namespacePut.get({ name: params.name, quotas: JSON.stringify(params.quotas), now: params.now }) as NamespaceRow));
    },
  };
}
