import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { Fleet } from '../../core/fleet.js';
import type { NlpPool } from '../../nlp/nlp-pool.js';
import { TaskSchema, taskJson } from '../../domain/wire.js';
import { errors } from './deps.js';

/**
 * Natural-language intake: free text in, a task out. The text is parsed on the NLP worker thread;
 * the capability is matched against those of the online agents, so "re-run the crawl" finds the
 * agents that `crawl`.
 */
export const intakeRoutes: FastifyPluginAsyncTypebox<{ fleet: Fleet; nlp: NlpPool }> = async (app, { fleet, nlp }) => {
  app.post(
    '/intake',
    {
      schema: {
        body: Type.Object(
          {
            text: Type.String({ minLength: 1, maxLength: 10_000 }),
            /** False: only say what task the text would make. Defaults to true. */
            submit: Type.Optional(Type.Boolean()),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({ intake: Type.Unknown(), task: Type.Null() }),
          201: Type.Object({ intake: Type.Unknown(), task: TaskSchema }),
          ...errors(400, 413, 415),
        },
      },
    },
    async (request, reply) => {
      const online = await fleet.agents.list({ status: 'online', limit: 1_000 });
      const capabilities = [...new Set(online.items.flatMap((a) => a.capabilities))];
      const intake = await nlp.analyse(request.body.text, capabilities);
      if (request.body.submit === false) return reply.status(200).send({ intake, task: null });
      const { task } = await fleet.tasks.submit({
        type: intake.type,
        priority: intake.priority,
        payload: { text: request.body.text, due: intake.due, entities: intake.entities },
      });
      return reply.status(201).send({ intake, task: taskJson(task) });
    },
  );
};
