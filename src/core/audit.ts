import type { AuditEntry, AuditRecord } from '../domain/audit.js';
import type { Page } from '../domain/types.js';
import type { AuditListParams } from '../store/audit-store.js';
import type { FleetContext } from './context.js';

/**
 * The audit log of administrative and destructive acts. `record` is the one call every such act
 * makes once it has been done (routes reach it through `request.audit(…)`, see
 * server/audit.ts). An entry that cannot be stored is logged at error level with everything it
 * says, instead of failing the act it describes, which has already happened.
 */
export class AuditLog {
  constructor(private readonly ctx: Pick<FleetContext, 'store' | 'now' | 'log'>) {}

  async record(entry: AuditRecord): Promise<AuditEntry | undefined> {
    const full = { at: entry.at ?? this.ctx.now(), address: entry.address ?? null, actor: entry.actor, action: entry.action, target: entry.target, details: entry.details };
    try {
      return await this.ctx.store.auditInsert(full);
    } catch (err) {
      this.ctx.log.error({ err, audit: full }, 'audit entry not stored');
      return undefined;
    }
  }

  list(params: AuditListParams): Promise<Page<AuditEntry>> {
    return this.ctx.store.auditList(params);
  }
}
