import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type { FastifyRequest } from 'fastify';
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
import { assertVisible, readNamespaces, writeNamespace } from '../namespaces.js';
import { NamespaceName, Pagination, RowIdParams } from '../schemas.js';
import { errors } from './deps.js';
import { pipelineInfo } from './pipeline-definitions.js';

const RunInputSchema = Type.Object(
  { input: Type.Optional(Type.Unknown()), idempotencyKey: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })) },
  { additionalProperties: false },
);
const Started = Type.Object({ run: RunSchema, created: Type.Boolean() });
/** Lists: the namespace to list, else every one the credential reaches. */
const InNamespace = { namespace: Type.Optional(NamespaceName) };
const PipelineName = Type.Object({ name: Type.String({ minLength: 1, maxLength: 200 }) });

/**
 * Pipelines: start runs (one or a batch, idempotent by key), follow them, cancel them, list them;
 * and the cases that runs are grouped into. A run is started in a namespace, and its cases are of
 * it: lists show the namespaces the credential reaches, and a run or case of another answers 404.
 */
export const pipelineRoutes: FastifyPluginAsyncTypebox<{ pipelines: Pipelines }> = async (app, { pipelines }) => {
  const engine = pipelines.engine;

  app.get(
    '/pipelines',
    {
      schema: {
        tags: ['pipelines'],
        summary: 'List pipelines',
        description:
          'The pipelines new runs can start with: those of the pipelines file (every namespace has them; namespace null), and the current version of each defined over the API in the namespaces the credential reaches (or the one named), with their steps and what each step needs.',
        querystring: Type.Object(InNamespace, { additionalProperties: false }),
        response: { 200: Type.Object({ items: Type.Array(PipelineInfoSchema) }), ...errors(400, 404) },
      },
    },
    async (request) => ({
      items: (await engine.definitions.list(readNamespaces(request, request.query.namespace))).map(pipelineInfo),
    }),
  );

  app.post(
    '/pipelines/:name/runs',
    {
      schema: {
        tags: ['pipelines'],
        summary: 'Start a pipeline run',
        description:
          'Starts a durable run of the named pipeline on the input, in the namespace named (or the credential\'s): the file\'s pipeline of that name, or the namespace\'s own. 201 when created, 200 when a run with the same idempotencyKey exists in the namespace. Each step\'s output is committed before the next starts; follow it with GET /v1/pipelines/runs/{id} or the event stream.',
        params: PipelineName,
        body: {
          ...Type.Object({ ...RunInputSchema.properties, ...InNamespace }, { additionalProperties: false }),
          examples: [{ input: { text: 'The street lights on Elm Road have been out for a week.' }, idempotencyKey: 'complaint-1187' }],
        },
        response: { 200: Started, 201: Started, ...errors(400, 404, 409, 413, 415, 503) },
      },
    },
    async (request, reply) => {
      const { namespace: named, ...input } = request.body;
      const [{ run, created }] = await engine.startRuns(request.params.name, [input], { namespace: writeNamespace(request, named) });
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
        description: 'All or nothing, all in one namespace; each run answered as by POST /v1/pipelines/{name}/runs, in order.',
        params: PipelineName,
        body: Type.Object({ runs: Type.Array(RunInputSchema, { minItems: 1 }), ...InNamespace }, { additionalProperties: false }),
        response: { 201: Type.Object({ items: Type.Array(Started) }), ...errors(400, 404, 409, 413, 415, 503) },
      },
    },
    async (request, reply) => {
      const results = await engine.startRuns(request.params.name, request.body.runs, { batch: true, namespace: writeNamespace(request, request.body.namespace) });
      return reply.status(201).send({ items: results.map((r) => ({ run: runJson(r.run), created: r.created })) });
    },
  );

  app.get(
    '/pipelines/runs',
    {
      schema: {
        tags: ['pipelines'],
        summary: 'List pipeline runs',
        description:
          'Newest first, of the namespaces the credential reaches (or the one named), filtered by pipeline or status; a page of up to limit, and nextCursor for the next page.',
        querystring: Type.Object(
          { pipeline: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })), status: Type.Optional(RunStatusSchema), ...InNamespace, ...Pagination },
          { additionalProperties: false },
        ),
        response: { 200: pageOf(RunSchema), ...errors(400, 404) },
      },
    },
    async (request) => {
      const q = request.query;
      const page = await engine.list({
        namespaces: readNamespaces(request, q.namespace),
        pipeline: q.pipeline,
        status: q.status as RunStatus | undefined,
        limit: q.limit,
        cursor: q.cursor,
      });
      return { items: page.items.map(runJson), nextCursor: page.nextCursor };
    },
  );

  /** The run, if the credential reaches its namespace; else the 404 of a run that does not exist. */
  const visibleRun = async (request: FastifyRequest, id: number) => {
    const run = await engine.get(id);
    assertVisible(request, run.namespace, 'run', id);
    return run;
  };

  app.get('/pipelines/runs/:id', { schema: { tags: ['pipelines'], summary: 'Get a pipeline run', description: 'The run with each step\'s status, attempts, output or error.', params: RowIdParams, response: { 200: Type.Object({ run: RunSchema }), ...errors(400, 404) } } }, async (request) => ({
    run: runJson(await visibleRun(request, request.params.id)),
  }));

  app.post(
    '/pipelines/runs/:id/cancel',
    {
      schema: {
        tags: ['pipelines'],
        summary: 'Cancel a pipeline run',
        description: 'No further step starts; a step in flight is abandoned. 409 for a run that has finished.',
        params: RowIdParams,
        response: { 200: Type.Object({ run: RunSchema }), ...errors(400, 404, 409) },
      },
    },
    async (request) => {
      await visibleRun(request, request.params.id);
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
        description:
          'Groups of similar runs of one namespace (by the cosine similarity of their embeddings), of the namespaces the credential reaches (or the one named), newest first; a page of up to limit, and nextCursor.',
        querystring: Type.Object({ ...InNamespace, ...Pagination }, { additionalProperties: false }),
        response: { 200: pageOf(CaseSchema), ...errors(400, 404) },
      },
    },
    async (request) => {
      const q = request.query;
      const page = await pipelines.cases.list({ namespaces: readNamespaces(request, q.namespace), limit: q.limit, cursor: q.cursor });
      return { items: page.items.map(caseJson), nextCursor: page.nextCursor };
    },
  );

  const CaseDetail = Type.Object({ case: Type.Composite([CaseSchema, Type.Object({ members: Type.Array(CaseMemberSchema) })]) });
  app.get('/cases/:id', { schema: { tags: ['cases'], summary: 'Get a case', description: 'The case with its member runs and their similarity.', params: RowIdParams, response: { 200: CaseDetail, ...errors(400, 404) } } }, async (request) => {
    const found = await pipelines.cases.get(request.params.id);
    assertVisible(request, found.namespace, 'case', request.params.id);
    return { case: { ...caseJson(found), members: found.members.map(caseMemberJson) } };
  });

  app.get('/pipelines/stats', { schema: { tags: ['pipelines'], summary: 'Background lane and provider usage', description: 'Steps running and waiting in the background lane, and each provider\'s concurrency, rate and circuit state.', response: { 200: PipelineStatsSchema } } }, async () => ({ lane: engine.usage(), providers: pipelines.providers.usage() }));
};
