import { auditList, toAuditEntry, type AuditRow } from '../audit-rows.js';
import type { AuditStore } from '../audit-store.js';
import { mapPage } from '../keyset.js';
import type { SqliteDatabase } from './database.js';

/** The audit log area of the SQLite driver. */
export function sqliteAudit(d: SqliteDatabase): AuditStore {
  const { db, groupCommit } = d;
  const s = {
    insert: db.prepare('INSERT INTO audit_log (at, actor, address, action, target, details) VALUES (@at, @actor, @address, @action, @target, @details) RETURNING *'),
    deleteBefore: db.prepare('DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log WHERE at < ? ORDER BY at LIMIT ?)'),
  };
  return {
    auditInsert(entry) {
      return groupCommit.write(() => toAuditEntry(s.insert.get({ ...entry, details: JSON.stringify(entry.details) }) as AuditRow));
    },
    async auditList(params) {
      return mapPage(await d.page(auditList(params)), toAuditEntry);
    },
    auditDeleteBefore(params) {
      return groupCommit.write(() => s.deleteBefore.run(params.before, params.limit).changes);
    },
  };
}
