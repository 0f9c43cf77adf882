import { Type } from '@sinclair/typebox';
import { AgentSchema, AgentStatusSchema, TaskSchema, agentJson, pageOf, tasksJsonText } from '../../domain/wire.js';
import { sendJsonText } from '../http.js';
import { AgentInputSchema, Id, NamespaceName, Pagination } from '../schemas.js';
import { readNamespaces, writeNamespace } from '../namespaces.js';
import { agentInReachWithoutRead, assertAgentInReach, bodyLimits, errors, pathAgent, type Routes } from './deps.js';

const Registered = Type.Object({ agent: AgentSchema, token: Type.String() });
const IdParams = Type.Object({ id: Id });
/** An agent as POST /v1/agents takes it: the agent, and the namespace it registers in. */
const RegisterBody = Type.Object({ ...AgentInputSchema.properties, namespace: Type.Optional(NamespaceName) }, { additionalProperties: false });

export const agentRoutes: Routes = async (app, { fleet, config, quotas }) => {
  app.post(
    '/agents',
    {
      bodyLimit: bodyLimits.agent,
      schema: {
        tags: ['agents'],
        summary: 'Register an agent',
        description:
          'Makes an agent with its capabilities (the task types it can do) in a namespace, for good, and answers its token, once: the agent sends it as its Bearer credential for its claims, completions, heartbeats and stream. It only ever claims and sees the tasks of its namespace.',
        body: { ...RegisterBody, examples: [{ name: 'crawler-1', capabilities: ['crawl'], labels: { zone: 'eu' }, maxConcurrency: 4 }] },
        response: { 201: Registered, ...errors(400, 413, 415, 429) },
      },
    },
    async (request, reply) => {
      const { namespace: named, ...input } = request.body;
      const namespace = writeNamespace(request, named);
      await quotas.admitAgents(namespace, 1);
      const { agent, token } = await fleet.agents.register(input, namespace);
      return reply.status(201).send({ agent: agentJson(agent), token });
    },
  );

  app.post(
    '/agents/batch',
    {
      bodyLimit: config.maxAgentBatch * 8 * 1024,
      schema: {
        tags: ['agents'],
        summary: 'Register agents in one batch',
        description: 'All or nothing, up to maxAgentBatch agents, all in one namespace; each answered with its token, in order.',
        body: Type.Object({ agents: Type.Array(AgentInputSchema, { minItems: 1 }), namespace: Type.Optional(NamespaceName) }, { additionalProperties: false }),
        response: { 201: Type.Object({ items: Type.Array(Registered) }), ...errors(400, 413, 415, 429) },
      },
    },
    async (request, reply) => {
      const namespace = writeNamespace(request, request.body.namespace);
      await quotas.admitAgents(namespace, request.body.agents.length);
      const registered = await fleet.agents.registerBatch(request.body.agents, namespace);
      return reply.status(201).send({ items: registered.map((r) => ({ agent: agentJson(r.agent), token: r.token })) });
    },
  );

  app.get(
    '/agents',
    {
      schema: {
        tags: ['agents'],
        summary: 'List agents',
        description:
          'Of the namespaces the key reaches (or the one named), filtered by status (online, stale, offline) or capability; a page of up to limit, and nextCursor for the next page.',
        querystring: Type.Object(
          { namespace: Type.Optional(NamespaceName), status: Type.Optional(AgentStatusSchema), capability: Type.Optional(Type.String({ maxLength: 100 })), ...Pagination },
          { additionalProperties: false },
        ),
        response: { 200: pageOf(AgentSchema), ...errors(400) },
      },
    },
    async (request) => {
      const { namespace, ...query } = request.query as Omit<Parameters<typeof fleet.agents.list>[0], 'namespaces'> & { namespace?: string };
      const page = await fleet.agents.list({ ...query, namespaces: readNamespaces(request, namespace) });
      return { items: page.items.map(agentJson), nextCursor: page.nextCursor };
    },
  );

  app.get(
    '/agents/:id',
    { schema: { tags: ['agents'], summary: 'Get an agent', description: 'Its capabilities, labels, status and last heartbeat.', params: IdParams, response: { 200: AgentSchema, ...errors(404) } } },
    async (request) => agentJson(await fleet.agents.get(request.params.id, readNamespaces(request))),
  );

  app.post(
    '/agents/:id/heartbeat',
    {
      config: { rateLimit: 'heartbeat', access: 'agent', actsFor: pathAgent },
      bodyLimit: bodyLimits.control,
      schema: {
        tags: ['agents'],
        summary: "Record an agent's heartbeat",
        description: 'Keeps the agent online. Without one for agentStaleMs it is stale; for agentOfflineMs, offline: its leases return to the queue and its locks go. A claim counts as a heartbeat too.',
        params: IdParams,
        response: { 200: AgentSchema, ...errors(404) },
      },
    },
    (request) => {
      const { id } = request.params;
      // Most heartbeats, of an agent this node knows online, are answered without a promise.
      const known = agentInReachWithoutRead(request) ? fleet.agents.heartbeatInMemory(id) : undefined;
      if (known) return agentJson(known);
      return assertAgentInReach(request, fleet, id).then(async () => agentJson(await fleet.agents.heartbeat(id)));
    },
  );

  app.get(
    '/agents/:id/leases',
    {
      config: { access: 'agent', actsFor: pathAgent },
      schema: {
        tags: ['agents'],
        summary: 'The tasks leased to an agent',
        description:
          "Every task the agent holds a lease on, as a claim hands it out (with its dependencies' results). An agent that cannot know what it holds takes its tasks back from here: a long-poll agent whose claim lost its answer, or one that restarted within its leases. The WebSocket welcome lists the same. Needs the agent's token (or an admin key).",
        params: IdParams,
        response: { 200: Type.Object({ tasks: Type.Array(TaskSchema) }), ...errors(404) },
      },
    },
    async (request, reply) => {
      await fleet.agents.get(request.params.id, readNamespaces(request));
      // As the welcome writes them: each payload spliced in as it is stored (taskJsonText).
      return sendJsonText(reply, `{"tasks":${tasksJsonText(await fleet.delivery.handAllLeases(request.params.id))}}`);
    },
  );

  app.delete(
    '/agents/:id',
    {
      config: { access: 'admin' },
      schema: {
        tags: ['agents'],
        summary: 'Remove an agent',
        description: 'Its leased tasks return to the queue, its locks are released and its token stops working. Needs an admin key.',
        params: IdParams,
        response: { 200: AgentSchema, ...errors(404) },
      },
    },
    async (request) => {
      const agent = await fleet.agents.remove(request.params.id, readNamespaces(request));
      await request.audit({ action: 'agent.removed', target: `agent:${agent.id}`, details: { name: agent.name } });
      return agentJson(agent);
    },
  );
};
