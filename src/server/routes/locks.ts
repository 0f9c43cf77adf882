import { Type } from '@sinclair/typebox';
import { LockSchema, lockJson, pageOf } from '../../domain/wire.js';
import { Id, LockInputSchema, Pagination } from '../schemas.js';
import { sendCached } from '../cached-reply.js';
import { bodyAgent, bodyLimits, errors, queryAgent, type Routes } from './deps.js';

export const lockRoutes: Routes = async (app, { fleet, cache }) => {
  app.post(
    '/locks',
    { config: { access: 'agent', actsFor: bodyAgent }, bodyLimit: bodyLimits.lock, schema: { body: LockInputSchema, response: { 200: LockSchema, ...errors(400, 404, 409, 413, 415) } } },
    async (request) => lockJson(await fleet.locks.acquire(request.body)),
  );

  app.get(
    '/locks',
    {
      schema: {
        querystring: Type.Object({ agentId: Type.Optional(Id), ...Pagination }, { additionalProperties: false }),
        response: { 200: pageOf(LockSchema), ...errors(400) },
      },
    },
    (request, reply) =>
      sendCached(request, reply, cache, {
        tags: ['locks'],
        compute: async () => {
          const page = await fleet.locks.list(request.query as Parameters<typeof fleet.locks.list>[0]);
          return { items: page.items.map(lockJson), nextCursor: page.nextCursor };
        },
      }),
  );

  app.get(
    '/locks/:id',
    { schema: { params: Type.Object({ id: Id }), response: { 200: LockSchema, ...errors(404) } } },
    async (request) => lockJson(await fleet.locks.get(request.params.id)),
  );

  app.delete(
    '/locks/:id',
    {
      config: { access: 'agent', actsFor: queryAgent },
      schema: {
        params: Type.Object({ id: Id }),
        querystring: Type.Object({ agentId: Type.Optional(Id) }, { additionalProperties: false }),
        response: { 200: LockSchema, ...errors(403, 404) },
      },
    },
    async (request) => {
      // An agent releases only its own locks, whether or not it names itself; an admin key may release any.
      const p = request.principal;
      const agentId = p?.kind === 'agent' ? p.agentId : request.query.agentId;
      return lockJson(await fleet.locks.release(request.params.id, agentId));
    },
  );
};
