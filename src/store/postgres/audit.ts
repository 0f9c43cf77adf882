import { auditList, toAuditEntry, type AuditRow } from '../audit-rows.js';
import type { AuditStore } from '../audit-store.js';
import { mapPage } from '../keyset.js';
import type { PostgresDatabase } from './database.js';

/** The audit log area of the PostgreSQL driver. */
export function postgresAudit(db: PostgresDatabase): AuditStore {
  return {
    async auditInsert(entry) {
      const [row] = await db.query<AuditRow>(
        'INSERT INTO audit_log (at, actor, address, action, target, details) VALUES ($1, $2, $3, $4, $5, $6) RETURNING *',
        [entry.at, entry.actor, entry.address, entry.action, entry.target, JSON.stringify(entry.details)],
      );
      return toAuditEntry(row);
    },
    async auditList(params) {
      return mapPage(await db.page(auditList(params)), toAuditEntry);
    },
    async auditDeleteBefore(params) {
      const rows = await db.query<{ id: number }>(
        'DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log WHERE at < $1 ORDER BY at LIMIT $2) RETURNING id',
        [params.before, params.limit],
      );
      return rows.length;
    },
  };
}
