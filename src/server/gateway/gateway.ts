import websocket from '@fastify/websocket';
import { Type } from '@sinclair/typebox';
import { FleetError } from '../../core/errors.js';
import { AGENT_PROTOCOL_VERSION } from '../../protocol/agent-stream.js';
import { Id } from '../schemas.js';
import { errors, type Routes } from '../routes/deps.js';
import { AgentGateway } from './agent-stream.js';
import { Connections } from './connections.js';
import { EventStream } from './event-stream.js';

/** Messages over this size are compressed when the peer offers permessage-deflate; smaller ones cost more to deflate than they save. */
const DEFLATE_THRESHOLD_BYTES = 1024;

const upgradeRequired = () =>
  new FleetError('FLEETD_ERR_VALIDATION', 'this endpoint is a WebSocket: send an upgrade request', { header: 'upgrade' });

/**
 * The WebSocket gateway: `GET /v1/agents/:id/stream` pushes tasks to agents, `GET /v1/events`
 * streams events to observers. Both share the connection cap, ping/pong and the slow-consumer cut.
 */
export const gatewayRoutes: Routes = async (app, { fleet, config }) => {
  const log = app.log;
  const connections = new Connections({
    maxConnections: config.wsMaxConnections,
    maxBufferedBytes: config.wsMaxBufferedBytes,
    pingMs: config.wsPingMs,
  });
  const agents = new AgentGateway(fleet, config, connections, log);
  const events = new EventStream(fleet, config, connections, log);

  await app.register(websocket, {
    options: {
      maxPayload: config.maxPayloadBytes + 64 * 1024,
      perMessageDeflate: { threshold: DEFLATE_THRESHOLD_BYTES },
    },
    preClose(done) {
      // Before the sockets close: a server going down starts no grace periods.
      agents.stop();
      events.stop();
      connections.stop();
      for (const client of app.websocketServer.clients) client.close(1001, 'server shutting down');
      // Not waiting for every peer's close handshake: one that stopped reading would hold shutdown for ws's 30 s timeout.
      app.websocketServer.close();
      done();
    },
  });
  connections.start();
  agents.start();
  events.start();

  app.route({
    method: 'GET',
    url: '/agents/:id/stream',
    schema: {
      params: Type.Object({ id: Id }),
      querystring: Type.Object(
        {
          token: Type.Optional(Type.String({ maxLength: 200 })),
          protocol: Type.Optional(Type.Integer({ minimum: 1 })),
        },
        { additionalProperties: false },
      ),
      response: errors(400, 401),
    },
    // Runs after validation and before the upgrade: a bad token gets a 401 and never a socket.
    preHandler: async (request) => {
      const { id } = request.params as { id: string };
      const query = request.query as { token?: string; protocol?: number };
      const header = request.headers.authorization;
      const token = header?.startsWith('Bearer ') ? header.slice(7) : query.token;
      if (!token || !(await fleet.agents.verifyToken(id, token))) {
        throw new FleetError('FLEETD_ERR_UNAUTHORIZED', 'a valid agent token is required (Authorization: Bearer <token>)', { agentId: id });
      }
      if (query.protocol !== undefined && query.protocol !== AGENT_PROTOCOL_VERSION) {
        throw new FleetError('FLEETD_ERR_VALIDATION', `protocol ${query.protocol} is not supported; this server speaks ${AGENT_PROTOCOL_VERSION}`, {
          field: 'querystring.protocol',
          supported: [AGENT_PROTOCOL_VERSION],
        });
      }
    },
    handler: async () => {
      throw upgradeRequired();
    },
    wsHandler: async (socket, request) => agents.open((request.params as { id: string }).id, socket),
  });

  app.get(
    '/gateway',
    {
      schema: {
        response: {
          200: Type.Object({
            connections: Type.Integer(),
            agents: Type.Integer(),
            slowConsumersCut: Type.Integer(),
            peakBufferedBytes: Type.Integer(),
          }),
        },
      },
    },
    async () => ({
      connections: connections.size,
      agents: agents.size,
      slowConsumersCut: connections.slowConsumersCut,
      peakBufferedBytes: connections.peakBufferedBytes,
    }),
  );

  app.route({
    method: 'GET',
    url: '/events',
    handler: async () => {
      throw upgradeRequired();
    },
    wsHandler: (socket) => events.open(socket),
  });
};
