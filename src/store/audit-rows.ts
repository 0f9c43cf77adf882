import type { AuditAction, AuditEntry } from '../domain/audit.js';
import type { AuditListParams } from './audit-store.js';
import type { KeysetQuery } from './keyset.js';

/** A row of audit_log, the same columns in both drivers. */
export interface AuditRow {
  id: number;
  at: number;
  actor: string;
  address: string | null;
  action: string;
  target: string;
  details: string;
}

export const toAuditEntry = (row: AuditRow): AuditEntry => ({
  id: Number(row.id),
  at: Number(row.at),
  actor: row.actor,
  address: row.address,
  action: row.action as AuditAction,
  target: row.target,
  details: JSON.parse(row.details) as Record<string, unknown>,
});

/** The audit log, newest first, with its filters; the same SQL in both dialects. */
export const auditList = (p: AuditListParams): KeysetQuery<AuditRow> => ({
  select: 'SELECT * FROM audit_log',
  where: [
    ['action = ?', p.action],
    ['actor = ?', p.actor],
    ['target = ?', p.target],
    ['at >= ?', p.since],
    ['at < ?', p.until],
  ],
  key: 'id',
  keyOf: (r) => Number(r.id),
  order: 'desc',
  cursor: p.cursor,
  limit: p.limit,
});
