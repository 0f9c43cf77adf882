import { Type } from '@sinclair/typebox';
import type { TaskTypeView } from '../../core/task-types.js';
import {
  TaskTypeDetailSchema,
  TaskTypeSchema,
  TypePolicySchema,
  isoOrNull,
  typePauseJson,
  typePolicyJson,
  type TaskTypeJson,
} from '../../domain/wire.js';
import { Namespace, TypeName, TypePauseInputSchema, TypePolicyInputSchema, TypeResumeInputSchema } from '../schemas.js';
import { readNamespaces, writeNamespace } from '../namespaces.js';
import { bodyLimits, errors, type Routes } from './deps.js';

const TypeParams = Type.Object({ type: TypeName });
/** The namespace whose type a request reads or changes (else the one the credential acts in: see server/namespaces.ts). */
const InNamespace = Type.Object({ namespace: Type.Optional(Namespace) }, { additionalProperties: false });
const PolicyAnswer = Type.Object({
  namespace: Type.String(),
  type: Type.String(),
  policy: TypePolicySchema,
  updatedAt: Type.String({ format: 'date-time' }),
});

const typeJson = (v: TaskTypeView): TaskTypeJson => ({
  namespace: v.namespace,
  type: v.type,
  policy: v.policy && typePolicyJson(v.policy),
  policyUpdatedAt: isoOrNull(v.policyUpdatedAt),
  counts: v.counts,
  paused: v.paused,
  pauses: v.pauses.map(typePauseJson),
  heldBack: v.heldBack,
});

/**
 * Task types: policies that share the fleet (limits on concurrency, per key, and on starts per
 * window; keys' weights in the round-robin), pauses, and what holds queued tasks back. Every limit
 * is enforced in the store's claim transaction, so all nodes sharing the store obey it together.
 * A type is its namespace's: a route about one type acts in one namespace (named by `namespace` in
 * the query or the Fleetd-Namespace header, else the one the credential acts in), and a key of a
 * namespace sets that namespace's policies and pauses, never another's (404, as for any type there).
 */
export const typeRoutes: Routes = async (app, { fleet }) => {
  app.get(
    '/types',
    {
      schema: {
        tags: ['types'],
        summary: 'List task types',
        description:
          "Every type that has tasks or a policy in the namespaces the credential reaches (or the one named), one entry per namespace and type: its tasks by status, its policy, whether it is paused, and how many of its queued tasks are held back, by the limit or pause that holds them.",
        querystring: InNamespace,
        response: { 200: Type.Object({ items: Type.Array(TaskTypeSchema) }), ...errors(400) },
      },
    },
    async (request) => ({ items: (await fleet.types.list(readNamespaces(request, request.query.namespace))).map(typeJson) }),
  );

  app.get(
    '/types/:type',
    {
      schema: {
        tags: ['types'],
        summary: 'Get a task type',
        description:
          'As in the list, with the concurrency keys that have the most queued tasks (up to 100): queued, leased, and what holds each back; and the usage its agents reported (tokens, cost) over the last hour and day, in all and per key.',
        params: TypeParams,
        querystring: InNamespace,
        response: { 200: TaskTypeDetailSchema, ...errors(400, 404) },
      },
    },
    async (request) => {
      const detail = await fleet.types.detail(writeNamespace(request, request.query.namespace), request.params.type);
      const usage = { ...detail.usage, keys: detail.usage.keys.map((k) => ({ ...k, key: k.key === '' ? null : k.key })) };
      return { ...typeJson(detail), keys: detail.keys, usage };
    },
  );

  app.put(
    '/types/:type',
    {
      config: { access: 'admin' },
      bodyLimit: bodyLimits.agent,
      schema: {
        tags: ['types'],
        summary: 'Set the policy of a task type',
        description:
          "Replaces the type's policy: at most maxConcurrency of its tasks leased at once across the cluster, at most maxConcurrencyPerKey per concurrency key, at most rateLimit.count started per rateLimit.perMs (per key with perKey). A limit left out is no limit. Tasks a limit holds back stay queued, spend no attempt, and go as soon as the limit allows. A change applies to the next claim; leases already held are kept.",
        params: TypeParams,
        querystring: InNamespace,
        body: { ...TypePolicyInputSchema, examples: [{ maxConcurrency: 20, maxConcurrencyPerKey: 2, rateLimit: { count: 60, perMs: 60000 } }] },
        response: { 200: PolicyAnswer, ...errors(400, 404, 413, 415) },
      },
    },
    async (request) => {
      const record = await fleet.types.setPolicy(writeNamespace(request, request.query.namespace), request.params.type, request.body);
      return {
        namespace: record.namespace,
        type: record.type,
        policy: typePolicyJson(record.policy),
        updatedAt: new Date(record.updatedAt).toISOString(),
      };
    },
  );

  app.post(
    '/types/:type/pause',
    {
      bodyLimit: bodyLimits.control,
      schema: {
        tags: ['types'],
        summary: 'Pause a task type, or one of its keys',
        description:
          'Its queued tasks stay queued and are not handed out; leased ones run to their end. With forMs the pause ends by itself; with key only that concurrency key is paused. Pausing again replaces the pause. 404 for a type with no tasks and no policy.',
        params: TypeParams,
        querystring: InNamespace,
        body: { ...TypePauseInputSchema, examples: [{ forMs: 60000, reason: 'provider answered 429' }] },
        response: { 200: TaskTypeSchema, ...errors(400, 404, 413, 415) },
      },
    },
    async (request) => {
      return typeJson(await fleet.types.pause(writeNamespace(request, request.query.namespace), request.params.type, request.body ?? {}));
    },
  );

  app.post(
    '/types/:type/resume',
    {
      bodyLimit: bodyLimits.control,
      schema: {
        tags: ['types'],
        summary: 'Resume a task type, or one of its keys',
        description: "Without a key, ends every pause of the type (its own and its keys'); with one, that key's. Its queued tasks go out at once.",
        params: TypeParams,
        querystring: InNamespace,
        body: { ...TypeResumeInputSchema, examples: [{}] },
        response: { 200: TaskTypeSchema, ...errors(400, 404, 413, 415) },
      },
    },
    async (request) => {
      return typeJson(await fleet.types.resume(writeNamespace(request, request.query.namespace), request.params.type, request.body ?? {}));
    },
  );
};
