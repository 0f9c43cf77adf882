import { Type } from '@sinclair/typebox';
import type { FastifyRequest } from 'fastify';
import { LockSchema, lockJson, pageOf } from '../../domain/wire.js';
import { Id, LockInputSchema, Namespace, Pagination } from '../schemas.js';
import { sendCached } from '../cached-reply.js';
import { NAMESPACE_HEADER, assertVisible, readNamespaces, writeNamespace } from '../namespaces.js';
import type { Fleet } from '../../core/fleet.js';
import { assertAgentInReach, bodyAgent, bodyLimits, errors, queryAgent, type Routes } from './deps.js';

/**
 * Before a lock is renewed or released by id: one of a namespace the request does not reach is
 * not found, as one that does not exist. A credential that reaches every namespace skips the read.
 */
async function checkVisible(fleet: Fleet, request: FastifyRequest, id: string): Promise<void> {
  if (readNamespaces(request) === undefined) return;
  assertVisible(request, (await fleet.locks.get(id)).namespace, 'lock', id);
}

export const lockRoutes: Routes = async (app, { fleet, cache }) => {
  app.post(
    '/locks',
    {
      config: { access: 'agent', actsFor: bodyAgent },
      bodyLimit: bodyLimits.lock,
      schema: {
        tags: ['locks'],
        summary: 'Acquire a lock on resources',
        description:
          'Takes every named resource (files, URLs, any string) for the agent, or none: 409 FLEETD_ERR_LOCK_CONFLICT lists the holders of those already taken. Locks clash only within one namespace: the lock is taken in its agent\'s namespace (one named must be it, else the agent is a 404), and two namespaces may hold the same resource at once. A name ending in / is a directory: it clashes with every name below it, and they with it; a name with a .. segment is refused. With waitMs (up to 30000) the request waits in its namespace\'s line, first come first served, for the resources to free, and answers 409 only if they have not by then. The lock ends after ttlMs, when released, or when its agent goes offline.',
        body: { ...LockInputSchema, examples: [{ agentId: '6f1c2d3e-0000-4000-8000-000000000001', resources: ['src/app.ts', 'src/db.ts'], ttlMs: 60000, description: 'refactor' }] },
        response: { 200: LockSchema, ...errors(400, 404, 409, 413, 415) },
      },
    },
    async (request, reply) => {
      const controller = new AbortController();
      // A client that hangs up leaves the line.
      const onClose = () => {
        if (!reply.raw.writableEnded) controller.abort();
      };
      reply.raw.once('close', onClose);
      try {
        const { namespace, ...input } = request.body;
        // The lock is the agent's, in the agent's namespace: one named (in the body or the header)
        // must be it; a key must reach the agent.
        await assertAgentInReach(request, fleet, input.agentId);
        const named = namespace === undefined && request.headers[NAMESPACE_HEADER] === undefined ? undefined : writeNamespace(request, namespace);
        return lockJson(await fleet.locks.acquire({ ...input, namespace: named }, controller.signal));
      } finally {
        reply.raw.off('close', onClose);
      }
    },
  );

  app.get(
    '/locks',
    {
      schema: {
        tags: ['locks'],
        summary: 'List locks',
        description:
          'Live locks of the namespaces the credential reaches (or of the one named), optionally of one agent; a page of up to limit, and nextCursor for the next page.',
        querystring: Type.Object({ agentId: Type.Optional(Id), namespace: Type.Optional(Namespace), ...Pagination }, { additionalProperties: false }),
        response: { 200: pageOf(LockSchema), ...errors(400, 404) },
      },
    },
    (request, reply) => {
      const { namespace, ...query } = request.query;
      const namespaces = readNamespaces(request, namespace);
      sendCached(request, reply, cache, {
        tags: ['locks'],
        compute: async () => {
          const page = await fleet.locks.list({ ...query, namespaces });
          return { items: page.items.map(lockJson), nextCursor: page.nextCursor };
        },
      });
    },
  );

  app.post(
    '/locks/:id/renew',
    {
      config: { access: 'agent', actsFor: bodyAgent },
      bodyLimit: bodyLimits.control,
      schema: {
        tags: ['locks'],
        summary: 'Renew a lock',
        description: "Its expiry moves to ttlMs from now. An agent renews only its own locks; an admin key may renew any. A lock past its expiry cannot be renewed (404).",
        params: Type.Object({ id: Id }),
        body: Type.Object(
          { ttlMs: Type.Integer({ minimum: 1 }), agentId: Type.Optional(Id) },
          { additionalProperties: false, examples: [{ agentId: '6f1c2d3e-0000-4000-8000-000000000001', ttlMs: 60000 }] },
        ),
        response: { 200: LockSchema, ...errors(400, 403, 404, 413, 415) },
      },
    },
    async (request) => {
      const p = request.principal;
      const agentId = p?.kind === 'agent' ? p.agentId : request.body.agentId;
      await checkVisible(fleet, request, request.params.id);
      return lockJson(await fleet.locks.renew(request.params.id, request.body.ttlMs, agentId));
    },
  );

  app.get(
    '/locks/:id',
    { schema: { tags: ['locks'], summary: 'Get a lock', description: 'Its agent, resources and expiry.', params: Type.Object({ id: Id }), response: { 200: LockSchema, ...errors(404) } } },
    async (request) => {
      const lock = await fleet.locks.get(request.params.id);
      assertVisible(request, lock.namespace, 'lock', lock.id);
      return lockJson(lock);
    },
  );

  app.delete(
    '/locks/:id',
    {
      config: { access: 'agent', actsFor: queryAgent },
      schema: {
        tags: ['locks'],
        summary: 'Release a lock',
        description: "An agent releases only its own locks; an admin key may release any.",
        params: Type.Object({ id: Id }),
        querystring: Type.Object({ agentId: Type.Optional(Id) }, { additionalProperties: false }),
        response: { 200: LockSchema, ...errors(403, 404) },
      },
    },
    async (request) => {
      // An agent releases only its own locks, whether or not it names itself; an admin key may release any.
      const p = request.principal;
      const agentId = p?.kind === 'agent' ? p.agentId : request.query.agentId;
      await checkVisible(fleet, request, request.params.id);
      const lock = await fleet.locks.release(request.params.id, agentId);
      // An agent letting go of its own lock is routine; an admin taking one away is not.
      if (p?.kind !== 'agent') await request.audit({ action: 'lock.released', target: `lock:${lock.id}`, details: { namespace: lock.namespace, agentId: lock.agentId, resources: lock.resources } });
      return lockJson(lock);
    },
  );
};
