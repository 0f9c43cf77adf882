import fp from 'fastify-plugin';
import type { FastifyRequest } from 'fastify';
import type { AuditAction } from '../domain/audit.js';
import type { AuditLog } from '../core/audit.js';

/** What a route says about an act; who and from where come from the request. */
export interface AuditNote {
  action: AuditAction;
  /** `<kind>:<id>`, e.g. `task:42`. */
  target: string;
  details?: Record<string, unknown>;
}

declare module 'fastify' {
  interface FastifyRequest {
    /**
     * Records an administrative or destructive act this request has just done in the audit log,
     * with its principal (`key:<id>`, `agent:<id>`, or `anonymous` with auth off) and address.
     */
    audit(note: AuditNote): Promise<void>;
  }
}

/** Who a request speaks for, as the audit log names it. */
export function actorOf(request: FastifyRequest): string {
  const p = request.principal;
  if (!p) return 'anonymous';
  return p.kind === 'key' ? `key:${p.keyId}` : `agent:${p.agentId}`;
}

/** Gives every request `request.audit(…)`: one call for a route handler to record what it did. */
export const auditPlugin = fp<{ audit: AuditLog }>(async (app, { audit }) => {
  app.decorateRequest('audit', async function (this: FastifyRequest, note: AuditNote) {
    await audit.record({ actor: actorOf(this), address: this.ip, action: note.action, target: note.target, details: note.details ?? {} });
  });
});
