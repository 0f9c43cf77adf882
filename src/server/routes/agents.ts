import { Type } from '@sinclair/typebox';
import { AgentSchema, AgentStatusSchema, agentJson, pageOf } from '../../domain/wire.js';
import { AgentInputSchema, Id, Pagination } from '../schemas.js';
import { bodyLimits, errors, pathAgent, type Routes } from './deps.js';

const Registered = Type.Object({ agent: AgentSchema, token: Type.String() });
const IdParams = Type.Object({ id: Id });

export const agentRoutes: Routes = async (app, { fleet, config }) => {
  app.post(
    '/agents',
    { bodyLimit: bodyLimits.agent, schema: { body: AgentInputSchema, response: { 201: Registered, ...errors(400, 413, 415) } } },
    async (request, reply) => {
      const { agent, token } = await fleet.agents.register(request.body);
      return reply.status(201).send({ agent: agentJson(agent), token });
    },
  );

  app.post(
    '/agents/batch',
    {
      bodyLimit: config.maxAgentBatch * 8 * 1024,
      schema: {
        body: Type.Object({ agents: Type.Array(AgentInputSchema, { minItems: 1 }) }, { additionalProperties: false }),
        response: { 201: Type.Object({ items: Type.Array(Registered) }), ...errors(400, 413, 415) },
      },
    },
    async (request, reply) => {
      const registered = await fleet.agents.registerBatch(request.body.agents);
      return reply.status(201).send({ items: registered.map((r) => ({ agent: agentJson(r.agent), token: r.token })) });
    },
  );

  app.get(
    '/agents',
    {
      schema: {
        querystring: Type.Object(
          { status: Type.Optional(AgentStatusSchema), capability: Type.Optional(Type.String({ maxLength: 100 })), ...Pagination },
          { additionalProperties: false },
        ),
        response: { 200: pageOf(AgentSchema), ...errors(400) },
      },
    },
    async (request) => {
      const page = await fleet.agents.list(request.query as Parameters<typeof fleet.agents.list>[0]);
      return { items: page.items.map(agentJson), nextCursor: page.nextCursor };
    },
  );

  app.get(
    '/agents/:id',
    { schema: { params: IdParams, response: { 200: AgentSchema, ...errors(404) } } },
    async (request) => agentJson(await fleet.agents.get(request.params.id)),
  );

  app.post(
    '/agents/:id/heartbeat',
    { config: { rateLimit: 'heartbeat', access: 'agent', actsFor: pathAgent }, bodyLimit: bodyLimits.control, schema: { params: IdParams, response: { 200: AgentSchema, ...errors(404) } } },
    async (request) => agentJson(await fleet.agents.heartbeat(request.params.id)),
  );

  app.delete(
    '/agents/:id',
    { config: { access: 'admin' }, schema: { params: IdParams, response: { 200: AgentSchema, ...errors(404) } } },
    async (request) => agentJson(await fleet.agents.remove(request.params.id)),
  );
};
