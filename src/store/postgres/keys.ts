import { ALL_NAMESPACES } from '../../domain/namespaces.js';
import { toApiKey, toNamespace, type ApiKeyRow, type NamespaceRow } from '../rows.js';
import type { KeyStore, NamespaceStore } from '../store.js';
import type { PostgresDatabase } from './database.js';

/** The API keys and namespaces area of the PostgreSQL driver. */
export function postgresKeys(db: PostgresDatabase): KeyStore & NamespaceStore {
  return {
    async apiKeyInsert(params) {
      const rows = await db.transaction(async (q) => {
        // Nodes starting together on an empty database must not each create a first admin key.
        if (params.onlyIfNone) await q('SELECT pg_advisory_xact_lock(hashtext($1))', [`fleetd-first-key:${db.schema}`]);
        const inserted = await q<ApiKeyRow>(
          `INSERT INTO api_keys (id, name, scope, hash, created_at, expires_at, namespaces) SELECT $1, $2, $3, $4, $5, $7::bigint, $8::text[]
           WHERE NOT $6 OR NOT EXISTS (SELECT 1 FROM api_keys) RETURNING *`,
          [params.id, params.name, params.scope, params.hash, params.now, params.onlyIfNone === true, params.expiresAt ?? null, params.namespaces],
        );
        const named = params.namespaces.filter((n) => n !== ALL_NAMESPACES);
        if (inserted.length > 0 && named.length > 0) {
          await q('INSERT INTO namespaces (name, created_at, updated_at) SELECT unnest($1::text[]), $2, $2 ON CONFLICT (name) DO NOTHING', [named, params.now]);
        }
        return inserted;
      });
      return rows[0] && toApiKey(rows[0]);
    },

    async apiKeyByHash(params) {
      const [row] = await db.query<ApiKeyRow>('SELECT * FROM api_keys WHERE (hash = $1 OR previous_hash = $1) AND revoked_at IS NULL', [params.hash]);
      return row && { key: toApiKey(row), secret: row.hash === params.hash ? 'current' : 'previous' };
    },

    async apiKeyList() {
      return (await db.query<ApiKeyRow>('SELECT * FROM api_keys ORDER BY created_at, id')).map(toApiKey);
    },

    async apiKeyRevoke(params) {
      const [row] = await db.query<ApiKeyRow>('UPDATE api_keys SET revoked_at = coalesce(revoked_at, $2) WHERE id = $1 RETURNING *', [
        params.id,
        params.now,
      ]);
      return row && toApiKey(row);
    },

    async apiKeyRotate(params) {
      const [row] = await db.query<ApiKeyRow>(
        `UPDATE api_keys SET previous_hash = hash, previous_expires_at = $3, hash = $2, rotated_at = $4,
           expires_at = CASE WHEN $5 THEN $6 ELSE expires_at END
         WHERE id = $1 AND revoked_at IS NULL RETURNING *`,
        [params.id, params.hash, params.previousExpiresAt, params.now, params.expiresAt !== undefined, params.expiresAt ?? null],
      );
      return row && toApiKey(row);
    },

    async namespaceList() {
      return (await db.query<NamespaceRow>('SELECT * FROM namespaces ORDER BY name')).map(toNamespace);
    },

    async namespaceGet(params) {
      const [row] = await db.query<NamespaceRow>('SELECT * FROM namespaces WHERE name = $1', [params.name]);
      return row && toNamespace(row);
    },

    async namespacePut(params) {
      const [row] = await db.query<NamespaceRow>(
        `INSERT INTO namespaces (name, quotas, created_at, updated_at) VALUES ($1, $2, $3, $3)
         ON CONFLICT (name) DO UPDATE SET quotas = excluded.quotas, updated_at = excluded.updated_at RETURNING *`,
        [params.name, JSON.stringify(params.quotas), params.now],
      );
      return toNamespace(row!);
    },
  };
}
