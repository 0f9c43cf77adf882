import { Type } from '@sinclair/typebox';
import { AUDIT_ACTIONS } from '../../domain/audit.js';
import { invalid } from '../../domain/errors.js';
import { AuditEntrySchema, auditEntryJson, literalsOf, pageOf } from '../../domain/wire.js';
import { requireEveryNamespace } from '../namespaces.js';
import { Pagination } from '../schemas.js';
import { errors, type Routes } from './deps.js';

const Time = Type.String({ format: 'date-time' });

/** The audit log, for admins: newest first, filtered, a page at a time. */
export const auditRoutes: Routes = async (app, { fleet }) => {
  app.get(
    '/audit',
    {
      config: { access: 'admin' },
      schema: {
        tags: ['system'],
        summary: 'List the audit log',
        description:
          'Administrative and destructive acts — keys created, rotated and revoked; tasks cancelled and retried; agents removed; locks released by an admin; pipeline runs cancelled — with who (actor: key:<id>, agent:<id>, cli, anonymous), when, what (action, target, details) and from where (address). Newest first; filters action, actor, target, since (inclusive) and until (exclusive); a page of up to limit, and nextCursor for the next page. Kept for FLEETD_AUDIT_RETENTION_MS. Needs an admin key that reaches every namespace.',
        querystring: Type.Object(
          {
            action: Type.Optional(literalsOf(AUDIT_ACTIONS)),
            actor: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
            target: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
            since: Type.Optional(Time),
            until: Type.Optional(Time),
            ...Pagination,
          },
          { additionalProperties: false },
        ),
        response: { 200: pageOf(AuditEntrySchema), ...errors(400, 403) },
      },
    },
    async (request) => {
      // The log spans every namespace: an admin of some of them would read the others' acts.
      requireEveryNamespace(request, 'the audit log is read');
      const { since, until, ...rest } = request.query;
      const from = since === undefined ? undefined : Date.parse(since);
      const to = until === undefined ? undefined : Date.parse(until);
      if (from !== undefined && to !== undefined && to <= from) throw invalid('until', 'must be later than since', { since, until });
      const page = await fleet.audit.list({ ...rest, since: from, until: to });
      return { items: page.items.map(auditEntryJson), nextCursor: page.nextCursor };
    },
  );
};
