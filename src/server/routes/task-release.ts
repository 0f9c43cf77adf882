import { Type } from '@sinclair/typebox';
import { TaskSchema, taskJson } from '../../domain/wire.js';
import { Id, RowIdParams, UsageInputSchema } from '../schemas.js';
import { assertAgentInReach, bodyAgent, bodyLimits, errors, minimalAnswer, ReturnQuery, type Routes } from './deps.js';

/**
 * An agent gives a task back for later without spending an attempt: its provider answered 429, a
 * resource it needs is busy. (The route lives apart from the task routes so that it can grow on its own.)
 */
export const taskReleaseRoutes: Routes = async (app, { fleet }) => {
  app.post(
    '/tasks/:id/release',
    {
      config: { access: 'agent', actsFor: bodyAgent },
      bodyLimit: bodyLimits.control,
      schema: {
        tags: ['tasks'],
        summary: 'Give a leased task back for later',
        description:
          'Only the lease holder. The task goes back to the queue after delayMs (scheduled until then), the attempt its claim counted is taken back, and its error records the reason (FLEETD_ERR_RELEASED). `usage` counts what the attempt used, as with a completion. ?return=minimal answers without the payload, result and error, and the payload is not read.',
        params: RowIdParams,
        querystring: ReturnQuery,
        body: Type.Object(
          {
            agentId: Id,
            delayMs: Type.Integer({ minimum: 0, maximum: 86_400_000 }),
            reason: Type.Optional(Type.String({ maxLength: 1000 })),
            usage: Type.Optional(UsageInputSchema),
          },
          { additionalProperties: false, examples: [{ agentId: '6f1c2d3e-0000-4000-8000-000000000001', delayMs: 30000, reason: 'provider answered 429' }] },
        ),
        response: { 200: TaskSchema, ...errors(400, 403, 404, 409, 413, 415) },
      },
    },
    async (request, reply) => {
      await assertAgentInReach(request, fleet, request.body.agentId);
      const release = { id: request.params.id, ...request.body };
      if (request.query.return === 'minimal') return minimalAnswer(reply, await fleet.tasks.release(release));
      return taskJson(await fleet.tasks.whole(release.id, () => fleet.tasks.release(release)));
    },
  );
};
