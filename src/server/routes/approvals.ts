import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { FastifyRequest } from 'fastify';
import type { Fleet } from '../../core/fleet.js';
import { RowIdSchema, RunSchema, runJson } from '../../domain/wire.js';
import type { Asker } from '../../pipelines/approvals.js';
import type { Pipelines } from '../../pipelines/pipelines.js';
import { assertVisible } from '../namespaces.js';
import { bodyLimits, errors } from './deps.js';

const StepPath = Type.Object({ id: RowIdSchema, step: Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]*$', maxLength: 200 }) });
const Decision = Type.Object({ comment: Type.Optional(Type.String({ maxLength: 2_000 })) }, { additionalProperties: false });

/**
 * Approvals by people: a waiting approval step is approved or rejected by a submit key (or an
 * admin's), or by an agent's token when the step names that agent; the decision, who made it and
 * the comment become the step's output. A step is decided only from its run's namespace: a key
 * that does not reach it, or an agent of another namespace, gets the 404 of a run that does not exist.
 */
export const approvalRoutes: FastifyPluginAsyncTypebox<{ pipelines: Pipelines; fleet: Fleet }> = async (app, { pipelines, fleet }) => {
  const engine = pipelines.engine;

  /** Who asks, with the name an approval step may list them by. */
  const askerOf = async (request: FastifyRequest): Promise<Asker> => {
    const p = request.principal;
    if (!p) return { kind: 'anonymous' };
    if (p.kind === 'agent') return { kind: 'agent', id: p.agentId, name: (await fleet.agents.get(p.agentId)).name };
    const key = (await fleet.credentials.list()).find((k) => k.id === p.keyId);
    return { kind: 'key', id: p.keyId, name: key?.name ?? p.keyId, scope: p.scope };
  };

  /** Refuses, as if the run did not exist, a credential that does not reach the run's namespace. */
  const assertRunVisible = async (request: FastifyRequest, runId: number): Promise<void> => {
    assertVisible(request, (await engine.get(runId)).namespace, 'run', runId);
  };

  for (const verb of ['approve', 'reject'] as const) {
    app.post(
      `/pipelines/runs/:id/steps/:step/${verb}`,
      {
        bodyLimit: bodyLimits.control,
        config: { access: 'submit-or-agent' },
        // The comment is optional, and so is a body that would hold only it.
        preValidation: async (request) => {
          request.body ??= {};
        },
        schema: {
          tags: ['pipelines'],
          summary: verb === 'approve' ? 'Approve a waiting approval step' : 'Reject a waiting approval step',
          description: `${
            verb === 'approve' ? 'The step completes and the run goes on' : 'The step fails and so does the run'
          }; the step's output is {decision, by, comment, decidedAt}. A submit key may decide a step that names no approvers; one that does is decided only by the keys and agents it names (and admin keys). 409 FLEETD_ERR_STEP_NOT_WAITING for a step that is not waiting for a decision (decided, timed out, not reached yet, or not an approval); of two decisions at once, on any nodes, one wins.`,
          params: StepPath,
          body: { ...Decision, examples: [{ comment: 'checked the totals' }] },
          response: { 200: Type.Object({ run: RunSchema }), ...errors(400, 404, 409, 413, 415, 503) },
        },
      },
      async (request) => {
        const { id, step } = request.params;
        await assertRunVisible(request, id);
        const run = await engine.decide({ runId: id, step, approved: verb === 'approve', comment: request.body?.comment ?? null, asker: await askerOf(request) });
        await request.audit({
          action: verb === 'approve' ? 'pipeline.step.approved' : 'pipeline.step.rejected',
          target: `run:${id}`,
          details: { pipeline: run.pipeline, step, comment: request.body?.comment ?? null },
        });
        return { run: runJson(run) };
      },
    );
  }

  app.get(
    '/pipelines/runs/:id/steps/:step/approval',
    {
      schema: {
        tags: ['pipelines'],
        summary: 'Whether this credential may decide an approval step',
        description: 'waiting: the step waits for a decision; mayDecide: this credential may approve or reject it now (what the dashboard shows its buttons by).',
        params: StepPath,
        response: { 200: Type.Object({ waiting: Type.Boolean(), mayDecide: Type.Boolean() }), ...errors(400, 404) },
      },
    },
    async (request) => {
      await assertRunVisible(request, request.params.id);
      const may = await engine.mayDecide(request.params.id, request.params.step, await askerOf(request));
      return { waiting: may !== undefined, mayDecide: may === true };
    },
  );
};
