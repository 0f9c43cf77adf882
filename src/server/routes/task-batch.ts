import { Type } from '@sinclair/typebox';
import { FleetError } from '../../domain/errors.js';
import { settleBatch } from '../../core/task-batch.js';
import { ErrorSchema, TaskSchema, tasksJsonText } from '../../domain/wire.js';
import { sendJsonText } from '../http.js';
import { MAX_BATCH_ITEMS, TaskBatchItemSchema, TaskBatchResultSchema, taskBatchResultJson } from '../../protocol/agent-stream.js';
import { ConnectionHangUp } from '../hang-up.js';
import { Id } from '../schemas.js';
import { assertAgentInReach, bodyAgent, errors, type Routes } from './deps.js';

const exampleAgent = '6f1c2d3e-0000-4000-8000-000000000001';

/**
 * `POST /v1/tasks/complete`: an agent's completions, failures and extensions in one request, each
 * answered on its own, and optionally its next tasks in the same round trip.
 */
export const taskBatchRoutes: Routes = async (app, { fleet, config }) => {
  app.post(
    '/tasks/complete',
    {
      config: { access: 'agent', actsFor: bodyAgent, longPoll: true },
      // Results travel in the items: a batch may carry as many as a submit batch.
      bodyLimit: 64 * 1024 * 1024,
      schema: {
        tags: ['tasks'],
        summary: 'Complete, fail and extend leased tasks in one request, and claim the next',
        description:
          'Each item completes, fails or extends one task the agent holds, under the same rules as POST /v1/tasks/:id/complete, /fail and /extend, and is answered in its place: the task\'s status (and lease expiry) after it, or the error that refused it (FLEETD_ERR_LEASE_LOST, FLEETD_ERR_PAYLOAD_TOO_LARGE, …). A refused item changes nothing and refuses no other; a task named twice is refused the second time. The items are written together (one transaction on SQLite, one statement per kind on PostgreSQL) and answered only once durable. With claim, the agent\'s next tasks are leased after the items are written, as POST /v1/tasks/claim would (waiting up to claim.waitMs), and answered in tasks; a claim that fails leaves the items\' answers standing and says why in claimError.',
        body: Type.Object(
          {
            agentId: Id,
            items: Type.Array(TaskBatchItemSchema, { minItems: 1, maxItems: MAX_BATCH_ITEMS }),
            claim: Type.Optional(
              Type.Object(
                {
                  max: Type.Integer({ minimum: 1, maximum: 1000 }),
                  waitMs: Type.Optional(Type.Integer({ minimum: 0, maximum: config.maxClaimWaitMs })),
                },
                { additionalProperties: false },
              ),
            ),
          },
          {
            additionalProperties: false,
            examples: [
              {
                agentId: exampleAgent,
                items: [
                  { op: 'complete', id: 42, result: { pages: 12 } },
                  { op: 'fail', id: 43, error: { message: 'HTTP 503 from acme.com' }, retryable: true },
                  { op: 'extend', id: 44, leaseMs: 60000 },
                ],
                claim: { max: 2, waitMs: 5000 },
              },
            ],
          },
        ),
        response: {
          200: Type.Object({
            items: Type.Array(TaskBatchResultSchema),
            tasks: Type.Optional(Type.Array(TaskSchema)),
            claimError: Type.Optional(ErrorSchema),
          }),
          ...errors(400, 413, 415),
        },
      },
    },
    async (request, reply) => {
      const { agentId, items, claim } = request.body;
      await assertAgentInReach(request, fleet, agentId);
      // Never rejects: each item is answered on its own.
      const settled = settleBatch(fleet.tasks, request.log, agentId, items).then((outcomes) => outcomes.map(taskBatchResultJson));
      if (!claim) return { items: await settled };
      // Where the store runs a turn's writes in the order they were started (SQLite), the claim
      // starts now, after the items' writes, and shares their transaction: one commit, and the room
      // the items freed is seen. Elsewhere it starts once they are written.
      if (!fleet.store.writesInStartOrder) await settled;
      // A client that hangs up stops waiting; anything already leased to it expires back to the queue.
      const hangUp = new ConnectionHangUp(reply.raw);
      // As text, each payload spliced in as it is stored (taskJsonText): the schema above describes it.
      const claimed = fleet.delivery.claim({ agentId, max: claim.max, waitMs: claim.waitMs ?? 0, signal: hangUp }).then(
        (tasks) => `"tasks":${tasksJsonText(tasks)}`,
        (err: unknown) => {
          if (!(err instanceof FleetError)) throw err;
          // The items are written: their answers must reach the agent whatever became of the claim.
          return `"tasks":[],"claimError":${JSON.stringify(err.toJSON().error)}`;
        },
      );
      try {
        const [results, next] = await Promise.all([settled, claimed]);
        return sendJsonText(reply, `{"items":${JSON.stringify(results)},${next}}`);
      } catch (err) {
        // Nobody will read what a claim still waiting would lease.
        hangUp.abort();
        throw err;
      }
    },
  );
};
