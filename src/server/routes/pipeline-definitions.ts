import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { PipelineInfoSchema, PipelineVersionSchema, pipelineVersionJson } from '../../domain/wire.js';
import type { CurrentPipeline } from '../../pipelines/definitions.js';
import type { Pipelines } from '../../pipelines/pipelines.js';
import { writeNamespace } from '../namespaces.js';
import { NamespaceName } from '../schemas.js';
import { errors } from './deps.js';

/** A pipeline's name in a path, as the definition language names it. */
const NAME = Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]*$', maxLength: 200 });
const Name = Type.Object({ name: NAME });
/**
 * A pipeline's name means one pipeline in one namespace: reads and deletes by name act in the
 * namespace a write would (named, the key's only one, or default for a key that reaches all).
 */
const InNamespace = { namespace: Type.Optional(NamespaceName) };
const Detail = Type.Object({
  pipeline: Type.Composite([
    Type.Object({ name: Type.String() }),
    Type.Object({ current: Type.Union([PipelineInfoSchema, Type.Null()]), versions: Type.Array(PipelineVersionSchema) }),
  ]),
});
const Version = Type.Object({ pipeline: Type.Object({ name: Type.String(), ...PipelineVersionSchema.properties }) });

export const pipelineInfo = (c: CurrentPipeline) => ({
  name: c.pipeline.name,
  description: c.pipeline.description,
  steps: c.pipeline.steps.map((s) => ({ name: s.name, kind: s.kind, needs: s.needs })),
  source: c.source,
  namespace: c.namespace,
  version: c.version,
});

/**
 * Pipelines defined over the API: each PUT stores the name's next version, validated as the
 * pipelines file is; runs keep the version they started with; DELETE stops new runs. Changing a
 * pipeline makes the server call what its steps name (any URL, any provider), so it needs an admin key.
 * Each namespace defines its own pipelines, and has the file's besides.
 */
export const pipelineDefinitionRoutes: FastifyPluginAsyncTypebox<{ pipelines: Pipelines }> = async (app, { pipelines }) => {
  const definitions = pipelines.engine.definitions;

  app.put(
    '/pipelines/:name',
    {
      bodyLimit: 1024 * 1024,
      config: { access: 'admin' },
      schema: {
        tags: ['pipelines'],
        summary: 'Define a pipeline (a new version)',
        description:
          "Stores the definition as the pipeline's next version in the namespace named by `namespace` (or the credential's; 1 for a name new there), after the checks the pipelines file gets; a definition that does not validate is a 400 naming the pipeline, step and field. New runs in that namespace start with it on every node; runs under way keep the version they started with. Another namespace's pipeline of the same name is another pipeline. 409 for a name the pipelines file defines.",
        params: Name,
        body: {
          // Loose on purpose: the definition's own checks name the pipeline, step and field at fault.
          ...Type.Object(
            {
              name: Type.Optional(Type.Unknown({ description: 'the name in the path, if given' })),
              description: Type.Optional(Type.Unknown({ description: 'text' })),
              defaults: Type.Optional(Type.Unknown({ description: 'timeoutMs, attempts, backoffMs, backoffMaxMs for every step' })),
              steps: Type.Optional(Type.Unknown({ description: 'the steps, as in the pipelines file (docs/pipelines.md)' })),
              // Where to define it; not part of the definition stored.
              ...InNamespace,
            },
            { additionalProperties: true },
          ),
          examples: [{ description: 'Summarise, then have a person approve', steps: [{ name: 'summary', kind: 'llm', provider: 'llm', prompt: 'Summarise: {{input.text}}' }] }],
        },
        response: { 201: Version, ...errors(400, 409, 413, 415, 503) },
      },
    },
    async (request, reply) => {
      const { namespace: named, ...definition } = request.body as Record<string, unknown> & { namespace?: string };
      const version = await definitions.define(writeNamespace(request, named), request.params.name, definition);
      await request.audit({ action: 'pipeline.defined', target: `pipeline:${version.name}`, details: { namespace: version.namespace, version: version.version } });
      return reply.status(201).send({ pipeline: { name: version.name, ...pipelineVersionJson(version) } });
    },
  );

  app.get(
    '/pipelines/:name',
    {
      schema: {
        tags: ['pipelines'],
        summary: 'Get a pipeline and its versions',
        description:
          "What new runs of the pipeline start with in the namespace (`current`, null once deleted), and its API versions there, newest first (up to limit; a deletion is a version too). A pipeline of the file has no versions. 404 for a name the namespace never defined, whatever other namespaces did.",
        params: Name,
        querystring: Type.Object({ limit: Type.Integer({ minimum: 1, maximum: 100, default: 20 }), ...InNamespace }, { additionalProperties: false }),
        response: { 200: Detail, ...errors(400, 404) },
      },
    },
    async (request) => {
      const { name } = request.params;
      const namespace = writeNamespace(request, request.query.namespace);
      const versions = pipelines.engine.definitions.fixed.has(name) ? [] : await definitions.versions(namespace, name, request.query.limit);
      let current: CurrentPipeline | null = null;
      try {
        current = await definitions.current(namespace, name);
      } catch (err) {
        if (versions.length === 0) throw err;
      }
      return { pipeline: { name, current: current && pipelineInfo(current), versions: versions.map(pipelineVersionJson) } };
    },
  );

  app.get(
    '/pipelines/:name/versions/:version',
    {
      schema: {
        tags: ['pipelines'],
        summary: 'Get one version of a pipeline',
        description: "The definition a version stored in the namespace, as given: the one its runs (pipelineVersion) follow.",
        // Versions are 32-bit in the store (PostgreSQL INTEGER): a larger one names no version.
        params: Type.Object({ name: NAME, version: Type.Integer({ minimum: 1, maximum: 2_147_483_647 }) }),
        querystring: Type.Object(InNamespace, { additionalProperties: false }),
        response: { 200: Version, ...errors(400, 404) },
      },
    },
    async (request) => {
      const version = await definitions.version(writeNamespace(request, request.query.namespace), request.params.name, request.params.version);
      return { pipeline: { name: version.name, ...pipelineVersionJson(version) } };
    },
  );

  app.delete(
    '/pipelines/:name',
    {
      config: { access: 'admin' },
      schema: {
        tags: ['pipelines'],
        summary: 'Delete a pipeline',
        description:
          "Records the deletion as the next version in the namespace: no new run starts there (404), runs under way finish on their version. A later PUT defines the name anew. 404 for a name without a live version in the namespace, 409 for one the pipelines file defines.",
        params: Name,
        querystring: Type.Object(InNamespace, { additionalProperties: false }),
        response: { 200: Version, ...errors(400, 404, 409, 503) },
      },
    },
    async (request) => {
      const version = await definitions.remove(writeNamespace(request, request.query.namespace), request.params.name);
      await request.audit({ action: 'pipeline.deleted', target: `pipeline:${version.name}`, details: { namespace: version.namespace, version: version.version } });
      return { pipeline: { name: version.name, ...pipelineVersionJson(version) } };
    },
  );
};
