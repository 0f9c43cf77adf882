import { toApiKey, type ApiKeyRow } from '../rows.js';
import type { KeyStore } from '../store.js';
import type { SqliteDatabase } from './database.js';

/** The API keys area of the SQLite driver. */
export function sqliteKeys({ db, groupCommit }: SqliteDatabase): KeyStore {
  const s = {
    insert: db.prepare(`INSERT INTO api_keys (id, name, scope, hash, created_at) SELECT @id, @name, @scope, @hash, @now
        WHERE @only_if_none = 0 OR NOT EXISTS (SELECT 1 FROM api_keys) RETURNING *`),
    byHash: db.prepare('SELECT * FROM api_keys WHERE hash = ? AND revoked_at IS NULL'),
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
        }) as ApiKeyRow | undefined;
        return row && toApiKey(row);
      });
    },

    async apiKeyByHash(params) {
      const row = s.byHash.get(params.hash) as ApiKeyRow | undefined;
      return row && toApiKey(row);
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
  };
}
