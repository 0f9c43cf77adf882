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
import { pipelineInfo } from './pipeline-definitions.js';

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

  app.get('/pipelines', { schema: { tags: ['pipelines'], summary: 'List pipelines', description: 'The pipelines new runs can start with: those of the pipelines file, and the current version of each defined over the API, with their steps and what each step needs.', response: { 200: Type.Object({ items: Type.Array(PipelineInfoSchema) }) } } }, async () => ({
    items: (await engine.definitions.list()).map(pipelineInfo),
  }));

  app.post(
    '/pipelines/:name/runs',
    {
      schema: {
        tags: ['pipelines'],
        summary: 'Start a pipeline run',
        description:
          'Starts a durable run of the named pipeline on the input: 201 when created, 200 when a run with the same idempotencyKey exists. Each step\'s output is committed before the next starts; follow it with GET /v1/pipelines/runs/{id} or the event stream.',
        params: PipelineName,
        body: { ...RunInputSchema, examples: [{ input: { text: 'The street lights on Elm Road have been out for a week.' }, idempotencyKey: 'complaint-1187' }] },
        response: { 200: Started, 201: Started, ...errors(400, 404, 409, 413, 415, 503) },
      },
    },
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
        tags: ['pipelines'],
        summary: 'Start pipeline runs in one batch',
        description: 'All or nothing; each run answered as by POST /v1/pipelines/{name}/runs, in order.',
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
        tags: ['pipelines'],
        summary: 'List pipeline runs',
        description: 'Newest first, filtered by pipeline or status; a page of up to limit, and nextCursor for the next page.',
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

  app.get('/pipelines/runs/:id', { schema: { tags: ['pipelines'], summary: 'Get a pipeline run', description: 'The run with each step\'s status, attempts, output or error.', params: RunId, response: { 200: Type.Object({ run: RunSchema }), ...errors(400, 404) } } }, async (request) => ({
    run: runJson(await engine.get(request.params.id)),
  }));

  app.post(
    '/pipelines/runs/:id/cancel',
    {
      schema: {
        tags: ['pipelines'],
        summary: 'Cancel a pipeline run',
        description: 'No further step starts; a step in flight is abandoned. 409 for a run that has finished.',
        params: RunId,
        response: { 200: Type.Object({ run: RunSchema }), ...errors(400, 404, 409) },
      },
    },
    async (request) => {
      const run = await engine.cancel(request.params.id);
      await request.audit({ action: 'pipeline.run.cancelled', target: `run:${run.id}`, details: { pipeline: run.pipeline } });
      return { run: runJson(run) };
    },
  );

  app.get(
    '/cases',
    {
      schema: {
        tags: ['cases'],
        summary: 'List cases',
        description: 'Groups of similar runs (by the cosine similarity of their embeddings), newest first; a page of up to limit, and nextCursor.',
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
  app.get('/cases/:id', { schema: { tags: ['cases'], summary: 'Get a case', description: 'The case with its member runs and their similarity.', params: RunId, response: { 200: CaseDetail, ...errors(400, 404) } } }, async (request) => {
    const found = await pipelines.cases.get(request.params.id);
    return { case: { ...caseJson(found), members: found.members.map(caseMemberJson) } };
  });

  app.get('/pipelines/stats', { schema: { tags: ['pipelines'], summary: 'Background lane and provider usage', description: 'Steps running and waiting in the background lane, and each provider\'s concurrency, rate and circuit state.', response: { 200: PipelineStatsSchema } } }, async () => ({ lane: engine.usage(), providers: pipelines.providers.usage() }));
};
