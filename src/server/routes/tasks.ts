import { Readable } from 'node:stream';
import { Type } from '@sinclair/typebox';
import type { FastifyReply } from 'fastify';
import { invalid } from '../../domain/errors.js';
import type { TaskInput } from '../../core/tasks.js';
import { TERMINAL_STATUSES, type Task, type TaskStatus } from '../../domain/types.js';
import { sendCached } from '../cached-reply.js';
import { ConnectionHangUp } from '../hang-up.js';
import { TaskSchema, TaskStatusSchema, minimalTaskJson, pageOf, taskJson, taskJsonText, taskPageText, tasksJsonText } from '../../domain/wire.js';
import { sendJsonText } from '../http.js';
import { Id, NamespaceName, Pagination, RowIdParams, Tag, TaskInputSchema, UsageInputSchema, type TaskInputBody } from '../schemas.js';
import { readNamespaces, writeNamespace } from '../namespaces.js';
import { assertAgentInReach, bodyAgent, bodyLimits, errors, minimalAnswer, ReturnQuery, type Routes } from './deps.js';

const Filters = {
  namespace: Type.Optional(NamespaceName),
  status: Type.Optional(TaskStatusSchema),
  type: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
  agentId: Type.Optional(Id),
  tag: Type.Optional(Tag),
};
const Submitted = Type.Object({ task: TaskSchema, created: Type.Boolean() });
/** One task as POST /v1/tasks takes it: a task, and the namespace it goes to. */
const SubmitBody = Type.Object({ ...TaskInputSchema.properties, namespace: Type.Optional(NamespaceName) }, { additionalProperties: false });
const submitExample = { type: 'crawl', payload: { url: 'https://acme.com' }, priority: 5, idempotencyKey: 'crawl-acme-2026-12-02' };
const submittedExample = {
  task: {
    id: 42, namespace: 'default', type: 'crawl', payload: { url: 'https://acme.com' }, priority: 5, requires: ['crawl'], status: 'queued',
    idempotencyKey: 'crawl-acme-2026-12-02', attempts: 0, maxAttempts: 5, leaseMs: 30000, backoffMs: 1000,
    runAt: '2026-12-02T09:00:00.000Z', createdAt: '2026-12-02T09:00:00.000Z', updatedAt: '2026-12-02T09:00:00.000Z',
    claimedAt: null, completedAt: null, agentId: null, leaseExpiresAt: null, result: null, error: null,
    parentId: null, dependencyCount: 0, dependenciesPending: 0,
    concurrencyKey: null, locks: [],
  },
  created: true,
};

/**
 * A submit's answer for one task, as text: the task whole, its payload spliced in as it is stored
 * (taskJsonText), or with ?return=minimal without its payload, result and error. Sent as it is
 * (sendJsonText): the response schema describes the whole form, and the minimal one leaves out
 * what it requires on purpose.
 */
function submittedText({ task, created }: { task: Task; created: boolean }, minimal: boolean): string {
  return `{"task":${minimal ? JSON.stringify(minimalTaskJson(task)) : taskJsonText(task)},"created":${created}}`;
}

function toTaskInput(body: TaskInputBody, namespace: string, now: number, index?: number): TaskInput {
  const at = index === undefined ? {} : { index };
  const { runAt, delayMs, ...rest } = body;
  if (runAt !== undefined && delayMs !== undefined) throw invalid('runAt', 'give runAt or delayMs, not both', at);
  let when: number | undefined;
  if (runAt !== undefined) {
    when = Date.parse(runAt);
    if (!Number.isFinite(when)) throw invalid('runAt', 'is not a valid date-time', at);
  } else if (delayMs !== undefined) when = now + delayMs;
  return { ...rest, namespace, runAt: when };
}

export const taskRoutes: Routes = async (app, { fleet, config, cache, quotas }) => {
  app.post(
    '/tasks',
    {
      schema: {
        tags: ['tasks'],
        summary: 'Submit a task',
        description:
          'Queues one task; a 2xx means it is durable. 201 when it was created, 200 when a task with the same idempotencyKey exists (that task is answered, nothing changes); 409 when that key was used for a different task. Delayed by runAt or delayMs. ?return=minimal answers without the payload.',
        querystring: ReturnQuery,
        body: { ...SubmitBody, examples: [submitExample] },
        response: { 200: Submitted, 201: { ...Submitted, examples: [submittedExample] }, ...errors(400, 409, 413, 415, 429) },
      },
    },
    async (request, reply) => {
      const { namespace: named, ...body } = request.body;
      const namespace = writeNamespace(request, named);
      await quotas.admitTasks(namespace, 1);
      const { task, created } = await fleet.tasks.submit(toTaskInput(body, namespace, fleet.now()));
      return sendJsonText(reply.status(created ? 201 : 200), submittedText({ task, created }, request.query.return === 'minimal'));
    },
  );

  app.post(
    '/tasks/batch',
    {
      bodyLimit: 64 * 1024 * 1024,
      schema: {
        tags: ['tasks'],
        summary: 'Submit tasks in one batch',
        description:
          'All or nothing: one bad task refuses the whole batch and stores none. Up to maxTaskBatch tasks, all to one namespace; each answered as by POST /v1/tasks, in order.',
        querystring: ReturnQuery,
        body: Type.Object(
          { tasks: Type.Array(TaskInputSchema, { minItems: 1 }), namespace: Type.Optional(NamespaceName) },
          { additionalProperties: false, examples: [{ tasks: [submitExample, { type: 'summarise', payload: { doc: 7 }, delayMs: 60000 }] }] },
        ),
        response: { 201: Type.Object({ items: Type.Array(Submitted) }), ...errors(400, 409, 413, 415, 429) },
      },
    },
    async (request, reply) => {
      const now = fleet.now();
      const namespace = writeNamespace(request, request.body.namespace);
      await quotas.admitTasks(namespace, request.body.tasks.length);
      const inputs = request.body.tasks.map((t, i) => toTaskInput(t, namespace, now, i));
      const results = await fleet.tasks.submitBatch(inputs);
      const minimal = request.query.return === 'minimal';
      return sendJsonText(reply.status(201), `{"items":[${results.map((r) => submittedText(r, minimal)).join(',')}]}`);
    },
  );

  app.post(
    '/tasks/bulk',
    {
      config: { access: 'admin' },
      bodyLimit: bodyLimits.control,
      schema: {
        tags: ['tasks'],
        summary: 'Retry, cancel or delete every task a filter matches',
        description:
          'Within the namespaces the key reaches (or the one named). retry: the dead and cancelled ones; cancel: the scheduled, queued and leased ones (their agents are told to stop); delete: the finished ones. Answers how many tasks match the filter, how many of them the action applies to (eligible) and how many it changed; with dryRun nothing changes. A missing filter is refused (400): send filter: {} to mean every task on purpose. Needs an admin key.',
        body: Type.Object(
          {
            action: Type.Union([Type.Literal('retry'), Type.Literal('cancel'), Type.Literal('delete')]),
            filter: Type.Optional(
              Type.Object(
                {
                  status: Type.Optional(TaskStatusSchema),
                  type: Filters.type,
                  tag: Filters.tag,
                  createdBefore: Type.Optional(Type.String({ format: 'date-time' })),
                },
                { additionalProperties: false },
              ),
            ),
            dryRun: Type.Optional(Type.Boolean()),
            namespace: Type.Optional(NamespaceName),
          },
          { additionalProperties: false, examples: [{ action: 'retry', filter: { status: 'dead', type: 'crawl' }, dryRun: true }] },
        ),
        response: {
          200: Type.Object({ matched: Type.Integer(), eligible: Type.Integer(), changed: Type.Integer(), dryRun: Type.Boolean() }),
          ...errors(400, 415),
        },
      },
    },
    async (request) => {
      const { action, filter, dryRun = false } = request.body;
      const namespaces = readNamespaces(request, request.body.namespace);
      let createdBefore: number | undefined;
      if (filter?.createdBefore !== undefined) {
        createdBefore = Date.parse(filter.createdBefore);
        if (!Number.isFinite(createdBefore)) throw invalid('filter.createdBefore', 'is not a valid date-time');
      }
      const counts = await fleet.tasks.bulk({
        action,
        filter: filter && { status: filter.status as TaskStatus | undefined, type: filter.type, tag: filter.tag, createdBefore },
        namespaces,
        dryRun,
      });
      if (!dryRun && counts.changed > 0) await request.audit({ action: 'tasks.bulk', target: `tasks:${action}`, details: { action, filter: filter ?? null, changed: counts.changed } });
      return { ...counts, dryRun };
    },
  );

  app.post(
    '/tasks/claim',
    {
      config: { rateLimit: 'claim', longPoll: true, access: 'agent', actsFor: bodyAgent },
      bodyLimit: bodyLimits.control,
      schema: {
        tags: ['tasks'],
        summary: 'Claim tasks for an agent (long-poll)',
        description:
          'Leases up to max queued tasks the agent has the capabilities for, highest priority first, oldest first within a priority. With waitMs it waits for work that long before answering an empty list. Each task carries a lease: complete, fail or extend it before leaseExpiresAt, or it returns to the queue. Needs the agent\'s token (or an admin key).',
        body: Type.Object(
          {
            agentId: Id,
            max: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })),
            waitMs: Type.Optional(Type.Integer({ minimum: 0, maximum: config.maxClaimWaitMs })),
          },
          { additionalProperties: false, examples: [{ agentId: '6f1c2d3e-0000-4000-8000-000000000001', max: 1, waitMs: 5000 }] },
        ),
        response: { 200: Type.Object({ tasks: Type.Array(TaskSchema) }), ...errors(400, 404, 415) },
      },
    },
    async (request, reply) => {
      await assertAgentInReach(request, fleet, request.body.agentId);
      // A client that hangs up stops waiting; anything already leased to it expires back to the queue.
      const tasks = await fleet.delivery.claim({
        agentId: request.body.agentId,
        max: request.body.max ?? 1,
        waitMs: request.body.waitMs ?? 0,
        signal: new ConnectionHangUp(reply.raw),
      });
      // As text, each payload spliced in as it is stored (taskJsonText): the schema above describes it.
      return sendJsonText(reply, `{"tasks":${tasksJsonText(tasks)}}`);
    },
  );

  app.post(
    '/tasks/:id/complete',
    {
      config: { access: 'agent', actsFor: bodyAgent },
      schema: {
        tags: ['tasks'],
        summary: 'Complete a leased task',
        description: 'Stores the result and finishes the task. 409 FLEETD_ERR_LEASE_LOST when the lease is no longer this agent\'s (it expired and the task went back to the queue). ?return=minimal answers without the payload, result and error, and the payload is not read.',
        params: RowIdParams,
        querystring: ReturnQuery,
        body: Type.Object(
          { agentId: Id, result: Type.Optional(Type.Unknown()), usage: Type.Optional(UsageInputSchema) },
          { additionalProperties: false, examples: [{ agentId: '6f1c2d3e-0000-4000-8000-000000000001', result: { pages: 12 } }] },
        ),
        response: { 200: TaskSchema, ...errors(400, 404, 409, 413, 415) },
      },
    },
    async (request, reply) => {
      await assertAgentInReach(request, fleet, request.body.agentId);
      const completion = { id: request.params.id, ...request.body };
      if (request.query.return === 'minimal') return minimalAnswer(reply, await fleet.tasks.complete(completion));
      return taskJson(await fleet.tasks.whole(completion.id, () => fleet.tasks.complete(completion)));
    },
  );

  app.post(
    '/tasks/:id/fail',
    {
      config: { access: 'agent', actsFor: bodyAgent },
      schema: {
        tags: ['tasks'],
        summary: 'Fail a leased task',
        description: 'Retryable (the default): back to the queue after a backoff, until maxAttempts, then dead. retryable: false sends it to dead at once. ?return=minimal answers without the payload, result and error, and the payload is not read.',
        params: RowIdParams,
        querystring: ReturnQuery,
        body: Type.Object(
          { agentId: Id, error: Type.Optional(Type.Unknown()), retryable: Type.Optional(Type.Boolean()), usage: Type.Optional(UsageInputSchema) },
          { additionalProperties: false, examples: [{ agentId: '6f1c2d3e-0000-4000-8000-000000000001', error: { message: 'HTTP 503 from acme.com' }, retryable: true }] },
        ),
        response: { 200: TaskSchema, ...errors(400, 404, 409, 413, 415) },
      },
    },
    async (request, reply) => {
      await assertAgentInReach(request, fleet, request.body.agentId);
      const failure = { id: request.params.id, ...request.body };
      if (request.query.return === 'minimal') return minimalAnswer(reply, await fleet.tasks.fail(failure));
      return taskJson(await fleet.tasks.whole(failure.id, () => fleet.tasks.fail(failure)));
    },
  );

  app.post(
    '/tasks/:id/extend',
    {
      config: { access: 'agent', actsFor: bodyAgent },
      bodyLimit: bodyLimits.control,
      schema: {
        tags: ['tasks'],
        summary: 'Extend the lease of a leased task',
        description: 'Renews the lease for leaseMs from now (the task\'s own leaseMs when omitted), for work that takes longer than one lease. ?return=minimal answers without the payload, result and error, and the payload is not read: what an agent extending every half lease wants.',
        params: RowIdParams,
        querystring: ReturnQuery,
        body: Type.Object(
          { agentId: Id, leaseMs: Type.Optional(Type.Integer({ minimum: 100, maximum: 86_400_000 })) },
          { additionalProperties: false },
        ),
        response: { 200: TaskSchema, ...errors(400, 404, 409, 415) },
      },
    },
    async (request, reply) => {
      await assertAgentInReach(request, fleet, request.body.agentId);
      const extension = { id: request.params.id, ...request.body };
      if (request.query.return === 'minimal') return minimalAnswer(reply, await fleet.tasks.extend(extension));
      return taskJson(await fleet.tasks.whole(extension.id, () => fleet.tasks.extend(extension)));
    },
  );

  app.post(
    '/tasks/:id/retry',
    {
      bodyLimit: bodyLimits.control,
      schema: {
        tags: ['tasks'],
        summary: 'Retry a dead or cancelled task',
        description: 'Puts it back in the queue with its attempts reset. 409 for a task in any other state.',
        params: RowIdParams,
        response: { 200: TaskSchema, ...errors(404, 409) },
      },
    },
    async (request) => {
      const task = await fleet.tasks.retry(request.params.id, readNamespaces(request));
      await request.audit({ action: 'task.retried', target: `task:${task.id}`, details: { type: task.type } });
      return taskJson(task);
    },
  );

  app.delete(
    '/tasks/:id',
    {
      schema: {
        tags: ['tasks'],
        summary: 'Cancel a task',
        description:
          'A waiting, queued, scheduled or leased task is cancelled; a finished one answers 409. The agent holding a leased one is told at once: a cancel message on its socket, or FLEETD_ERR_CANCELLED in the answer to its next extend; its completion is refused. The reason is recorded as the task\'s error.',
        params: RowIdParams,
        querystring: Type.Object(
          { reason: Type.Optional(Type.String({ minLength: 1, maxLength: 500, description: 'Why; the agent is told it and the task records it' })) },
          { additionalProperties: false },
        ),
        response: { 200: TaskSchema, ...errors(400, 404, 409) },
      },
    },
    async (request) => {
      const task = await fleet.tasks.cancel(request.params.id, request.query.reason, readNamespaces(request));
      await request.audit({ action: 'task.cancelled', target: `task:${task.id}`, details: { type: task.type, ...(request.query.reason === undefined ? {} : { reason: request.query.reason }) } });
      return taskJson(task);
    },
  );

  app.get(
    '/tasks/export',
    {
      schema: {
        tags: ['tasks'],
        summary: 'Export tasks as NDJSON',
        description: 'Every task matching the filters, oldest first, one JSON object a line, streamed as the client reads it.',
        querystring: Type.Object(Filters, { additionalProperties: false }),
      },
    },
    async (request, reply) => {
      const { namespace, ...filters } = request.query as { namespace?: string; status?: TaskStatus; type?: string; agentId?: string };
      const namespaces = readNamespaces(request, namespace);
      async function* lines() {
        for await (const chunk of fleet.tasks.export({ ...filters, namespaces })) {
          yield chunk.map(taskJsonText).join('\n') + '\n';
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
        tags: ['tasks'],
        summary: 'List tasks',
        description:
          'Newest first, of the namespaces the key reaches (or the one named), filtered by status, type, agent or tag; a page of up to limit, and nextCursor for the next page (null on the last).',
        querystring: Type.Object({ ...Filters, ...Pagination }, { additionalProperties: false }),
        response: { 200: pageOf(TaskSchema), ...errors(400) },
      },
    },
    (request, reply) =>
      sendCached(request, reply, cache, {
        tags: ['tasks'],
        compute: () => {
          const { namespace, ...query } = request.query as Omit<Parameters<typeof fleet.tasks.list>[0], 'namespaces'> & { namespace?: string };
          return fleet.tasks.list({ ...query, namespaces: readNamespaces(request, namespace) });
        },
        text: taskPageText,
      }),
  );

  app.get(
    '/tasks/:id/children',
    {
      schema: {
        tags: ['tasks'],
        summary: 'List the children of a task',
        description: 'The tasks submitted with this one as their parentId, oldest first; a page of up to limit, and nextCursor for the next page. 404 when the task does not exist.',
        params: RowIdParams,
        querystring: Type.Object(Pagination, { additionalProperties: false }),
        response: { 200: pageOf(TaskSchema), ...errors(400, 404) },
      },
    },
    async (request, reply) => {
      const page = await fleet.tasks.children({ id: request.params.id, ...request.query, namespaces: readNamespaces(request) });
      return sendJsonText(reply, taskPageText(page));
    },
  );

  app.get(
    '/tasks/:id',
    {
      config: { longPoll: true },
      schema: {
        tags: ['tasks'],
        summary: 'Get a task',
        description:
          'The task with its payload, status, lease, result or error. With waitMs, answers as soon as the task has ended (completed, dead, cancelled), or at the end of the wait with the task as it is then.',
        params: RowIdParams,
        querystring: Type.Object(
          {
            waitMs: Type.Optional(
              Type.Integer({ minimum: 0, maximum: config.maxTaskWaitMs, description: 'Wait up to this long for the task to end (at most maxTaskWaitMs)' }),
            ),
          },
          { additionalProperties: false },
        ),
        response: { 200: TaskSchema, ...errors(400, 404) },
      },
    },
    (request, reply) => {
      const waitMs = request.query.waitMs ?? 0;
      if (waitMs > 0) {
        // A client that hangs up stops the wait. Like sendCached, the handler returns nothing and
        // the reply is sent when the wait ends.
        fleet.tasks
          .waitForEnd(request.params.id, waitMs, new ConnectionHangUp(reply.raw), readNamespaces(request))
          .then((task) => sendJsonText(reply, taskJsonText(task)), (err: unknown) => (reply as FastifyReply).send(err));
        return;
      }
      sendCached(request, reply, cache, {
        tags: [`task:${request.params.id}`],
        compute: () => fleet.tasks.get(request.params.id, readNamespaces(request)),
        // A finished task changes only by a retry, which publishes an event; one in flight changes
        // on timers (a delay running out) that publish none for it, so it is always read afresh.
        cacheable: (task) => TERMINAL_STATUSES.has(task.status),
        text: taskJsonText,
      });
    },
  );
};
