import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { RunStatus } from '../../domain/runs.js';
import {
  CaseMemberSchema,
  CaseSchema,
  PipelineInfoSchema,
  PipelineStatsSchema,
  RunSchema,
  RunStatusSchema,
  caseJson,
  caseMemberJson,
  pageOf,
  runJson,
} from '../../domain/wire.js';
import type { Pipelines } from '../../pipelines/pipelines.js';
import { Pagination } from '../schemas.js';
import { errors } from './deps.js';

const RunInputSchema = Type.Object(
  { input: Type.Optional(Type.Unknown()), idempotencyKey: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })) },
  { additionalProperties: false },
);
const Started = Type.Object({ run: RunSchema, created: Type.Boolean() });
const PipelineName = Type.Object({ name: Type.String({ minLength: 1, maxLength: 200 }) });
const RunId = Type.Object({ id: Type.Integer({ minimum: 1 }) });

/**
 * Pipelines: start runs (one or a batch, idempotent by key), follow them, cancel them, list them;
 * and the cases that runs are grouped into.
 */
export const pipelineRoutes: FastifyPluginAsyncTypebox<{ pipelines: Pipelines }> = async (app, { pipelines }) => {
  const engine = pipelines.engine;

  app.get('/pipelines', { schema: { response: { 200: Type.Object({ items: Type.Array(PipelineInfoSchema) }) } } }, async () => ({
    items: [...engine.pipelines.values()].map((p) => ({
      name: p.name,
      description: p.description,
      steps: p.steps.map((s) => ({ name: s.name, kind: s.kind, needs: s.needs })),
    })),
  }));

  app.post(
    '/pipelines/:name/runs',
    { schema: { params: PipelineName, body: RunInputSchema, response: { 200: Started, 201: Started, ...errors(400, 404, 409, 413, 415, 503) } } },
    async (request, reply) => {
      const [{ run, created }] = await engine.startRuns(request.params.name, [request.body]);
      return reply.status(created ? 201 : 200).send({ run: runJson(run), created });
    },
  );

  app.post(
    '/pipelines/:name/runs/batch',
    {
      bodyLimit: 64 * 1024 * 1024,
      schema: {
        params: PipelineName,
        body: Type.Object({ runs: Type.Array(RunInputSchema, { minItems: 1 }) }, { additionalProperties: false }),
        response: { 201: Type.Object({ items: Type.Array(Started) }), ...errors(400, 404, 409, 413, 415, 503) },
      },
    },
    async (request, reply) => {
      const results = await engine.startRuns(request.params.name, request.body.runs, true);
      return reply.status(201).send({ items: results.map((r) => ({ run: runJson(r.run), created: r.created })) });
    },
  );

  app.get(
    '/pipelines/runs',
    {
      schema: {
        querystring: Type.Object(
          { pipeline: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })), status: Type.Optional(RunStatusSchema), ...Pagination },
          { additionalProperties: false },
        ),
        response: { 200: pageOf(RunSchema), ...errors(400) },
      },
    },
    async (request) => {
      const q = request.query;
      const page = await engine.list({ pipeline: q.pipeline, status: q.status as RunStatus | undefined, limit: q.limit, cursor: q.cursor });
      return { items: page.items.map(runJson), nextCursor: page.nextCursor };
    },
  );

  app.get('/pipelines/runs/:id', { schema: { params: RunId, response: { 200: Type.Object({ run: RunSchema }), ...errors(400, 404) } } }, async (request) => ({
    run: runJson(await engine.get(request.params.id)),
  }));

  app.post(
    '/pipelines/runs/:id/cancel',
    { schema: { params: RunId, response: { 200: Type.Object({ run: RunSchema }), ...errors(400, 404, 409) } } },
    async (request) => ({ run: runJson(await engine.cancel(request.params.id)) }),
  );

  app.get(
    '/cases',
    {
      schema: {
        querystring: Type.Object({ ...Pagination }, { additionalProperties: false }),
        response: { 200: pageOf(CaseSchema), ...errors(400) },
      },
    },
    async (request) => {
      const page = await pipelines.cases.list({ limit: request.query.limit, cursor: request.query.cursor });
      return { items: page.items.map(caseJson), nextCursor: page.nextCursor };
    },
  );

  const CaseDetail = Type.Object({ case: Type.Composite([CaseSchema, Type.Object({ members: Type.Array(CaseMemberSchema) })]) });
  app.get('/cases/:id', { schema: { params: RunId, response: { 200: CaseDetail, ...errors(400, 404) } } }, async (request) => {
    const found = await pipelines.cases.get(request.params.id);
    return { case: { ...caseJson(found), members: found.members.map(caseMemberJson) } };
  });

  app.get('/pipelines/stats', { schema: { response: { 200: PipelineStatsSchema } } }, async () => ({ lane: engine.usage(), providers: pipelines.providers.usage() }));
};
