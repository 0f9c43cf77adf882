import type { AuditAction, AuditEntry } from '../domain/audit.js';
import type { Page } from '../domain/types.js';

export interface AuditListParams {
  action?: AuditAction;
  actor?: string;
  target?: string;
  /** Entries at or after this time (epoch ms). */
  since?: number;
  /** Entries before this time (epoch ms). */
  until?: number;
  limit: number;
  cursor?: string;
}

/** The audit log's area of the store: appended to, listed newest first, and swept by age. */
export interface AuditStore {
  /** Appends one entry, durable when the promise resolves. */
  auditInsert(entry: Omit<AuditEntry, 'id'>): Promise<AuditEntry>;
  /** Newest first, by keyset (see keyset.ts). */
  auditList(params: AuditListParams): Promise<Page<AuditEntry>>;
  /** Deletes up to `limit` entries older than `before`; answers how many went. */
  auditDeleteBefore(params: { before: number; limit: number }): Promise<number>;
}
