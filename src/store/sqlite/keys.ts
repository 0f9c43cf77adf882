import { toApiKey, type ApiKeyRow } from '../rows.js';
import type { KeyStore } from '../store.js';
import type { SqliteDatabase } from './database.js';

/** The API keys area of the SQLite driver. */
export function sqliteKeys({ db, groupCommit }: SqliteDatabase): KeyStore {
  const s = {
    insert: db.prepare(`INSERT INTO api_keys (id, name, scope, hash, created_at, expires_at) SELECT @id, @name, @scope, @hash, @now, @expires_at
        WHERE @only_if_none = 0 OR NOT EXISTS (SELECT 1 FROM api_keys) RETURNING *`),
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
          now: params.now,
          only_if_none: params.onlyIfNone ? 1 : 0,
          expires_at: params.expiresAt ?? null,
        }) as ApiKeyRow | undefined;
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
  };
}
