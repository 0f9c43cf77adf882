import { Readable } from 'node:stream';
import { Type } from '@sinclair/typebox';
import { invalid } from '../../domain/errors.js';
import type { TaskInput } from '../../core/tasks.js';
import { TERMINAL_STATUSES, type TaskStatus } from '../../domain/types.js';
import { sendCached } from '../cached-reply.js';
import { TaskSchema, TaskStatusSchema, pageOf, taskJson } from '../../domain/wire.js';
import { Id, Pagination, TaskInputSchema, type TaskInputBody } from '../schemas.js';
import { bodyAgent, bodyLimits, errors, type Routes } from './deps.js';

const TaskId = Type.Object({ id: Type.Integer({ minimum: 1 }) });
const Filters = {
  status: Type.Optional(TaskStatusSchema),
  type: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
  agentId: Type.Optional(Id),
};
const Submitted = Type.Object({ task: TaskSchema, created: Type.Boolean() });

function toTaskInput(body: TaskInputBody, now: number, index?: number): TaskInput {
  const at = index === undefined ? {} : { index };
  const { runAt, delayMs, ...rest } = body;
  if (runAt !== undefined && delayMs !== undefined) throw invalid('runAt', 'give runAt or delayMs, not both', at);
  let when: number | undefined;
  if (runAt !== undefined) {
    when = Date.parse(runAt);
    if (!Number.isFinite(when)) throw invalid('runAt', 'is not a valid date-time', at);
  } else if (delayMs !== undefined) when = now + delayMs;
  return { ...rest, runAt: when };
}

export const taskRoutes: Routes = async (app, { fleet, config, cache }) => {
  app.post(
    '/tasks',
    { schema: { body: TaskInputSchema, response: { 200: Submitted, 201: Submitted, ...errors(400, 409, 413, 415) } } },
    async (request, reply) => {
      const { task, created } = await fleet.tasks.submit(toTaskInput(request.body, fleet.now()));
      return reply.status(created ? 201 : 200).send({ task: taskJson(task), created });
    },
  );

  app.post(
    '/tasks/batch',
    {
      bodyLimit: 64 * 1024 * 1024,
      schema: {
        body: Type.Object({ tasks: Type.Array(TaskInputSchema, { minItems: 1 }) }, { additionalProperties: false }),
        response: { 201: Type.Object({ items: Type.Array(Submitted) }), ...errors(400, 409, 413, 415) },
      },
    },
    async (request, reply) => {
      const now = fleet.now();
      const inputs = request.body.tasks.map((t, i) => toTaskInput(t, now, i));
      const results = await fleet.tasks.submitBatch(inputs);
      return reply.status(201).send({ items: results.map((r) => ({ task: taskJson(r.task), created: r.created })) });
    },
  );

  app.post(
    '/tasks/claim',
    {
      config: { rateLimit: 'claim', longPoll: true, access: 'agent', actsFor: bodyAgent },
      bodyLimit: bodyLimits.control,
      schema: {
        body: Type.Object(
          {
            agentId: Id,
            max: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })),
            waitMs: Type.Optional(Type.Integer({ minimum: 0, maximum: config.maxClaimWaitMs })),
          },
          { additionalProperties: false },
        ),
        response: { 200: Type.Object({ tasks: Type.Array(TaskSchema) }), ...errors(400, 404, 415) },
      },
    },
    async (request, reply) => {
      const controller = new AbortController();
      // A client that hangs up stops waiting; anything already leased to it expires back to the queue.
      const onClose = () => {
        if (!reply.raw.writableEnded) controller.abort();
      };
      reply.raw.once('close', onClose);
      try {
        const tasks = await fleet.delivery.claim({
          agentId: request.body.agentId,
          max: request.body.max ?? 1,
          waitMs: request.body.waitMs ?? 0,
          signal: controller.signal,
        });
        return { tasks: tasks.map(taskJson) };
      } finally {
        reply.raw.off('close', onClose);
      }
    },
  );

  app.post(
    '/tasks/:id/complete',
    {
      config: { access: 'agent', actsFor: bodyAgent },
      schema: {
        params: TaskId,
        body: Type.Object({ agentId: Id, result: Type.Optional(Type.Unknown()) }, { additionalProperties: false }),
        response: { 200: TaskSchema, ...errors(400, 404, 409, 413, 415) },
      },
    },
    async (request) => taskJson(await fleet.tasks.complete({ id: request.params.id, ...request.body })),
  );

  app.post(
    '/tasks/:id/fail',
    {
      config: { access: 'agent', actsFor: bodyAgent },
      schema: {
        params: TaskId,
        body: Type.Object(
          { agentId: Id, error: Type.Optional(Type.Unknown()), retryable: Type.Optional(Type.Boolean()) },
          { additionalProperties: false },
        ),
        response: { 200: TaskSchema, ...errors(400, 404, 409, 413, 415) },
      },
    },
    async (request) => taskJson(await fleet.tasks.fail({ id: request.params.id, ...request.body })),
  );

  app.post(
    '/tasks/:id/extend',
    {
      config: { access: 'agent', actsFor: bodyAgent },
      bodyLimit: bodyLimits.control,
      schema: {
        params: TaskId,
        body: Type.Object(
          { agentId: Id, leaseMs: Type.Optional(Type.Integer({ minimum: 100, maximum: 86_400_000 })) },
          { additionalProperties: false },
        ),
        response: { 200: TaskSchema, ...errors(400, 404, 409, 415) },
      },
    },
    async (request) => taskJson(await fleet.tasks.extend({ id: request.params.id, ...request.body })),
  );

  app.post(
    '/tasks/:id/retry',
    { bodyLimit: bodyLimits.control, schema: { params: TaskId, response: { 200: TaskSchema, ...errors(404, 409) } } },
    async (request) => taskJson(await fleet.tasks.retry(request.params.id)),
  );

  app.delete(
    '/tasks/:id',
    { schema: { params: TaskId, response: { 200: TaskSchema, ...errors(404, 409) } } },
    async (request) => taskJson(await fleet.tasks.cancel(request.params.id)),
  );

  app.get(
    '/tasks/export',
    { schema: { querystring: Type.Object(Filters, { additionalProperties: false }) } },
    async (request, reply) => {
      const filters = request.query as { status?: TaskStatus; type?: string; agentId?: string };
      async function* lines() {
        for await (const chunk of fleet.tasks.export(filters)) {
          yield chunk.map((t) => JSON.stringify(taskJson(t))).join('\n') + '\n';
        }
      }
      // Readable.from pulls the next chunk only when the socket has drained the last one.
      return reply
        .header('content-type', 'application/x-ndjson')
        .header('cache-control', 'no-store')
        .send(Readable.from(lines()));
    },
  );

  app.get(
    '/tasks',
    {
      schema: {
        querystring: Type.Object({ ...Filters, ...Pagination }, { additionalProperties: false }),
        response: { 200: pageOf(TaskSchema), ...errors(400) },
      },
    },
    (request, reply) =>
      sendCached(request, reply, cache, {
        tags: ['tasks'],
        compute: async () => {
          const page = await fleet.tasks.list(request.query as Parameters<typeof fleet.tasks.list>[0]);
          return { items: page.items.map(taskJson), nextCursor: page.nextCursor };
        },
      }),
  );

  app.get(
    '/tasks/:id',
    { schema: { params: TaskId, response: { 200: TaskSchema, ...errors(404) } } },
    (request, reply) =>
      sendCached(request, reply, cache, {
        tags: [`task:${request.params.id}`],
        compute: async () => taskJson(await fleet.tasks.get(request.params.id)),
        // A finished task changes only by a retry, which publishes an event; one in flight changes
        // on timers (a delay running out) that publish none for it, so it is always read afresh.
        cacheable: (task) => TERMINAL_STATUSES.has(task.status),
      }),
  );
};
