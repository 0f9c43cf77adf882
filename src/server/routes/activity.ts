import { Type } from '@sinclair/typebox';
import { LOG_LEVELS } from '../../domain/activity.js';
import { SequenceSchema, TaskActivitySchema, literalsOf, taskActivityJson } from '../../domain/wire.js';
import { Id, RowIdParams } from '../schemas.js';
import { assertVisible } from '../namespaces.js';
import { assertAgentInReach, bodyAgent, errors, type Routes } from './deps.js';

const Accepted = Type.Object({ taskId: Type.Integer(), lastSeq: Type.Integer({ description: 'The sequence number of the last entry this report added' }) });
const agentExample = '6f1c2d3e-0000-4000-8000-000000000001';
/** Most log lines in one report; an SDK batches a tick's lines into one. */
const MAX_LINES_PER_REPORT = 1_000;
const MAX_READ = 5_000;

/**
 * Progress, log lines and output that the agent holding a task reports while it runs, and the
 * retained tail of them (core/activity.ts keeps it; the SSE stream is in routes/task-stream.ts).
 */
export const activityRoutes: Routes = async (app, { fleet }) => {
  const accepted = (id: number, entries: { seq: number }[]) => ({ taskId: id, lastSeq: entries[entries.length - 1].seq });
  const refusals = errors(400, 403, 404, 409, 413, 415);

  app.post(
    '/tasks/:id/progress',
    {
      config: { access: 'agent', actsFor: bodyAgent },
      schema: {
        tags: ['tasks'],
        summary: 'Report the progress of a leased task',
        description:
          'From the agent holding the lease: progress from 0 to 1, with an optional message. Only the latest is kept. 409 FLEETD_ERR_LEASE_LOST when the agent does not hold the lease, FLEETD_ERR_TASK_STATE (with its status) when the task has finished or was cancelled.',
        params: RowIdParams,
        body: Type.Object(
          { agentId: Id, progress: Type.Number({ minimum: 0, maximum: 1 }), message: Type.Optional(Type.String()) },
          { additionalProperties: false, examples: [{ agentId: agentExample, progress: 0.4, message: 'parsed 40 pages' }] },
        ),
        response: { 200: Accepted, ...refusals },
      },
    },
    async (request) => {
      await assertAgentInReach(request, fleet, request.body.agentId);
      return accepted(request.params.id, await fleet.activity.progress({ id: request.params.id, ...request.body }));
    },
  );

  app.post(
    '/tasks/:id/logs',
    {
      config: { access: 'agent', actsFor: bodyAgent },
      schema: {
        tags: ['tasks'],
        summary: 'Append log lines to a leased task',
        description: `From the agent holding the lease: up to ${MAX_LINES_PER_REPORT} lines, each with a level (info by default). The newest taskLogMaxLines lines are kept; a line over taskLogLineMaxBytes is refused (413 FLEETD_ERR_ENTRY_TOO_LARGE) and nothing of the report is kept.`,
        params: RowIdParams,
        body: Type.Object(
          {
            agentId: Id,
            lines: Type.Array(
              Type.Object({ level: Type.Optional(literalsOf(LOG_LEVELS)), message: Type.String() }, { additionalProperties: false }),
              { minItems: 1, maxItems: MAX_LINES_PER_REPORT },
            ),
          },
          { additionalProperties: false, examples: [{ agentId: agentExample, lines: [{ message: 'fetched 12 pages' }, { level: 'warn', message: 'page 7 timed out; retrying' }] }] },
        ),
        response: { 200: Accepted, ...refusals },
      },
    },
    async (request) => {
      await assertAgentInReach(request, fleet, request.body.agentId);
      return accepted(request.params.id, await fleet.activity.logs({ id: request.params.id, ...request.body }));
    },
  );

  app.post(
    '/tasks/:id/output',
    {
      config: { access: 'agent', actsFor: bodyAgent },
      schema: {
        tags: ['tasks'],
        summary: 'Append a chunk of output to a leased task',
        description:
          'From the agent holding the lease: a chunk of streamed output, such as an LLM\'s tokens. The newest taskOutputMaxBytes bytes are kept, in whole chunks; a chunk over taskOutputChunkMaxBytes is refused (413 FLEETD_ERR_ENTRY_TOO_LARGE).',
        params: RowIdParams,
        body: Type.Object({ agentId: Id, text: Type.String({ minLength: 1 }) }, { additionalProperties: false, examples: [{ agentId: agentExample, text: 'The quick brown' }] }),
        response: { 200: Accepted, ...refusals },
      },
    },
    async (request) => {
      await assertAgentInReach(request, fleet, request.body.agentId);
      return accepted(request.params.id, await fleet.activity.output({ id: request.params.id, ...request.body }));
    },
  );

  app.get(
    '/tasks/:id/logs',
    {
      schema: {
        tags: ['tasks'],
        summary: "A task's progress, log and output",
        description:
          'The latest progress and the retained tail of log lines and output, in the order they were reported, each with its sequence number. since: only entries after that sequence number; more: true when limit cut the answer short (read again with since = the seq of the last entry answered). logLines and outputBytes count everything ever reported, so that what was dropped shows.',
        params: RowIdParams,
        querystring: Type.Object(
          {
            since: Type.Optional(SequenceSchema),
            limit: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_READ, default: 1_000 })),
          },
          { additionalProperties: false },
        ),
        response: { 200: TaskActivitySchema, ...errors(400, 404) },
      },
    },
    async (request) => {
      const { task, tail } = await fleet.activity.read({ id: request.params.id, since: request.query.since, limit: request.query.limit ?? 1_000 });
      assertVisible(request, task.namespace, 'task', request.params.id);
      return taskActivityJson(task, tail);
    },
  );
};
