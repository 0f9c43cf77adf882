import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type, type TUnsafe } from '@sinclair/typebox';
import type { Case } from '../../domain/runs.js';
import type { Pipelines } from '../../pipelines/pipelines.js';
import { RUN_STATUSES, type PipelineRun, type RunStatus } from '../../domain/runs.js';
import { Pagination, pageOf } from '../schemas.js';
import { errors } from './deps.js';

const Time = Type.String({ format: 'date-time' });
const NullableTime = Type.Union([Time, Type.Null()]);
const RunStatusSchema = Type.Union(RUN_STATUSES.map((s) => Type.Literal(s))) as unknown as TUnsafe<RunStatus>;
const StepSchema = Type.Object({
  name: Type.String(),
  status: Type.String(),
  attempts: Type.Integer(),
  output: Type.Unknown(),
  error: Type.Unknown(),
  startedAt: NullableTime,
  finishedAt: NullableTime,
  nextAttemptAt: NullableTime,
});
const RunSchema = Type.Object({
  id: Type.Integer(),
  pipeline: Type.String(),
  status: RunStatusSchema,
  input: Type.Unknown(),
  output: Type.Unknown(),
  error: Type.Unknown(),
  idempotencyKey: Type.Union([Type.String(), Type.Null()]),
  createdAt: Time,
  updatedAt: Time,
  finishedAt: NullableTime,
  steps: Type.Array(StepSchema),
});
const RunInputSchema = Type.Object(
  { input: Type.Optional(Type.Unknown()), idempotencyKey: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })) },
  { additionalProperties: false },
);
const Started = Type.Object({ run: RunSchema, created: Type.Boolean() });
const PipelineName = Type.Object({ name: Type.String({ minLength: 1, maxLength: 200 }) });
const RunId = Type.Object({ id: Type.Integer({ minimum: 1 }) });

const iso = (ms: number): string => new Date(ms).toISOString();
const isoOrNull = (ms: number | null): string | null => (ms === null ? null : iso(ms));

/** The API's view of a run: times as ISO 8601. */
export function runJson(r: PipelineRun) {
  return {
    ...r,
    createdAt: iso(r.createdAt),
    updatedAt: iso(r.updatedAt),
    finishedAt: isoOrNull(r.finishedAt),
    steps: r.steps.map((s) => ({ ...s, startedAt: isoOrNull(s.startedAt), finishedAt: isoOrNull(s.finishedAt), nextAttemptAt: isoOrNull(s.nextAttemptAt) })),
  };
}

/**
 * Pipelines: start runs (one or a batch, idempotent by key), follow them, cancel them, list them;
 * and the cases that runs are grouped into.
 */
export const pipelineRoutes: FastifyPluginAsyncTypebox<{ pipelines: Pipelines }> = async (app, { pipelines }) => {
  const engine = pipelines.engine;

  app.get('/pipelines', { schema: { tags: ['pipelines'], summary: 'List pipelines', description: 'The pipelines this node loaded, with their steps and what each step needs.' } }, async () => ({
    items: [...engine.pipelines.values()].map((p) => ({
      name: p.name,
      description: p.description,
      steps: p.steps.map((s) => ({ name: s.name, kind: s.kind, needs: s.needs })),
    })),
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
    async (request) => ({ run: runJson(await engine.cancel(request.params.id)) }),
  );

  const CaseSchema = Type.Object({ id: Type.Integer(), title: Type.String(), size: Type.Integer(), createdAt: Time, updatedAt: Time });
  const caseJson = (c: Case) => ({ ...c, createdAt: iso(c.createdAt), updatedAt: iso(c.updatedAt) });

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

  const MemberSchema = Type.Object({ runId: Type.Integer(), similarity: Type.Number(), text: Type.String(), addedAt: Time });
  const CaseDetail = Type.Object({ case: Type.Composite([CaseSchema, Type.Object({ members: Type.Array(MemberSchema) })]) });
  app.get('/cases/:id', { schema: { tags: ['cases'], summary: 'Get a case', description: 'The case with its member runs and their similarity.', params: RunId, response: { 200: CaseDetail, ...errors(400, 404) } } }, async (request) => {
    const found = await pipelines.cases.get(request.params.id);
    return { case: { ...caseJson(found), members: found.members.map((m) => ({ ...m, addedAt: iso(m.addedAt) })) } };
  });

  app.get('/pipelines/stats', { schema: { tags: ['pipelines'], summary: 'Background lane and provider usage', description: 'Steps running and waiting in the background lane, and each provider\'s concurrency, rate and circuit state.' } }, async () => ({ lane: engine.usage(), providers: pipelines.providers.usage() }));
};
