import { Type } from '@sinclair/typebox';
import { NAMESPACE_PATTERN } from '../../domain/namespaces.js';
import { NamespaceQuotasSchema, NamespaceSchema, namespaceJson } from '../../domain/wire.js';
import { assertVisible, readNamespaces, requireEveryNamespace } from '../namespaces.js';
import { bodyLimits, errors, type Routes } from './deps.js';

const NameParams = Type.Object({ name: Type.String({ pattern: NAMESPACE_PATTERN, description: "The namespace's name" }) });

/**
 * The namespaces, for admins: each admin key sees those it reaches; quotas are set only by an admin
 * key that reaches every namespace, so that no team raises its own.
 */
export const namespaceRoutes: Routes = async (app, { fleet, quotas }) => {
  const admin = { access: 'admin' } as const;

  app.get(
    '/namespaces',
    {
      config: admin,
      schema: {
        tags: ['namespaces'],
        summary: 'List namespaces',
        description: "The namespaces this key reaches that are known (default, each one a key is scoped to, each one given quotas), by name, with their quotas. Needs an admin key.",
        response: { 200: Type.Object({ items: Type.Array(NamespaceSchema) }) },
      },
    },
    async (request) => ({ items: (await fleet.namespaces.list(readNamespaces(request))).map(namespaceJson) }),
  );

  app.get(
    '/namespaces/:name',
    {
      config: admin,
      schema: {
        tags: ['namespaces'],
        summary: 'Get a namespace',
        description: 'One namespace with its quotas; 404 when it is not known or this key does not reach it. Needs an admin key.',
        params: NameParams,
        response: { 200: NamespaceSchema, ...errors(400, 404) },
      },
    },
    async (request) => {
      assertVisible(request, request.params.name, 'namespace', request.params.name);
      return namespaceJson(await fleet.namespaces.get(request.params.name));
    },
  );

  app.put(
    '/namespaces/:name',
    {
      config: admin,
      bodyLimit: bodyLimits.control,
      schema: {
        tags: ['namespaces'],
        summary: 'Set a namespace’s quotas',
        description:
          'Creates the namespace if it is not known, and sets its quotas; a quota left out or null is no limit. A submit beyond maxQueuedTasks or maxTasksPerSecond, or an agent registering beyond maxAgents, is refused with 429 and Retry-After. Needs an admin key that reaches every namespace.',
        params: NameParams,
        body: Type.Object(
          { quotas: Type.Partial(NamespaceQuotasSchema, { additionalProperties: false }) },
          { additionalProperties: false, examples: [{ quotas: { maxQueuedTasks: 10_000, maxTasksPerSecond: 200, maxAgents: 50 } }] },
        ),
        response: { 200: NamespaceSchema, ...errors(400, 403, 413, 415) },
      },
    },
    async (request) => {
      requireEveryNamespace(request, 'quotas are set');
      const { maxQueuedTasks = null, maxTasksPerSecond = null, maxAgents = null } = request.body.quotas;
      const namespace = await fleet.namespaces.setQuotas(request.params.name, { maxQueuedTasks, maxTasksPerSecond, maxAgents });
      quotas.forget(namespace.name);
      await request.audit({ action: 'namespace.updated', target: `namespace:${namespace.name}`, details: { quotas: namespace.quotas } });
      return namespaceJson(namespace);
    },
  );
};
