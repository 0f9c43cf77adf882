import websocket from '@fastify/websocket';
import { Type } from '@sinclair/typebox';
import { FleetError } from '../../domain/errors.js';
import { AGENT_PROTOCOL_VERSION } from '../../protocol/agent-stream.js';
import { Id, NamespaceName } from '../schemas.js';
import { assertAgentInReach, errors, pathAgent, type Routes } from '../routes/deps.js';
import { ownerOf } from '../auth.js';
import { readNamespaces } from '../namespaces.js';
import { AgentGateway } from './agent-stream.js';
import { Connections } from './connections.js';
import { EventStream } from './event-stream.js';

/**
 * Messages from this size (in characters of their JSON text) are compressed when the peer offers
 * permessage-deflate (Connections.send decides). Smaller ones (a push of a few tasks, a completion's
 * answer) cost more to deflate than they save, and wait for zlib's threads on their way out: the
 * same cut-off as HTTP bodies' (server/http.ts).
 */
const DEFLATE_THRESHOLD_BYTES = 8 * 1024;

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
    maxPerOwner: config.maxConnectionsPerKey,
    maxBufferedBytes: config.wsMaxBufferedBytes,
    pingMs: config.wsPingMs,
    deflateMinChars: DEFLATE_THRESHOLD_BYTES,
  });
  const agents = new AgentGateway(fleet, config, connections, log);
  const events = new EventStream(fleet, config, connections, log);

  await app.register(websocket, {
    options: {
      maxPayload: config.maxPayloadBytes + 64 * 1024,
      perMessageDeflate: { threshold: DEFLATE_THRESHOLD_BYTES },
    },
    // A frame ws cannot read (invalid UTF-8, too big, not a frame) is an error ws answers itself: it
    // has already queued its close frame (1007, 1009, 1002) when it tells us. The plugin's default
    // terminates the socket here, which could cut that close frame off behind a message still going
    // out, and the peer saw 1006 instead of the reason. A socket not yet closing (an error of ours)
    // is still cut at once.
    errorHandler(error, socket, request) {
      request.log.info({ err: error }, 'websocket error');
      if (socket.readyState !== socket.CLOSING && socket.readyState !== socket.CLOSED) socket.terminate();
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
  // Timers (ping, heartbeats, stats) and bus subscriptions start with the server, after the fleet has
  // started, not when the plugin registers: a server that fails to start leaves nothing running.
  app.addHook('onReady', async () => {
    connections.start();
    agents.start();
    events.start();
  });

  app.route({
    method: 'GET',
    url: '/agents/:id/stream',
    schema: {
      tags: ['agents'],
      summary: "An agent's WebSocket: tasks pushed to it",
      description:
        'Upgrade to a WebSocket (credential in the Authorization header, or ?token= where a browser cannot set one). fleetd pushes tasks as they arrive, within the credit the agent grants; the agent completes, fails and extends over the same socket. A refusal (401, 403, 429) is an HTTP error before the upgrade.',
      params: Type.Object({ id: Id }),
      querystring: Type.Object(
        {
          token: Type.Optional(Type.String({ maxLength: 200 })),
          protocol: Type.Optional(Type.Integer({ minimum: 1 })),
        },
        { additionalProperties: false },
      ),
      response: errors(400, 401, 403, 429),
    },
    // Authenticated (server/auth.ts) and checked here before the upgrade: a refusal is an HTTP error, never a socket.
    config: { access: 'agent', actsFor: pathAgent, tokenInQuery: true },
    preHandler: async (request) => {
      connections.checkOwner(ownerOf(request));
      await assertAgentInReach(request, fleet, (request.params as { id: string }).id);
      const query = request.query as { protocol?: number };
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
    wsHandler: async (socket, request) => agents.open((request.params as { id: string }).id, socket, ownerOf(request)),
  });

  app.get(
    '/gateway',
    {
      schema: {
        tags: ['system'],
        summary: 'WebSocket gateway counters',
        description: 'Open connections, connected agents, slow consumers cut off and the largest send buffer seen.',
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
    config: { tokenInQuery: true },
    schema: {
      tags: ['system'],
      summary: 'Live events over a WebSocket',
      description:
        'Upgrade to a WebSocket (credential in the Authorization header, or ?token=): task, agent, lock and run events in batches, in the REST API\'s JSON shape; subscribe to topics to narrow them. Only the tasks and agents of the namespaces the key reaches (or of the one named by ?namespace=) are told of. Each event has a seq; ?since=&epoch= (or since and epoch in a subscribe) replays the retained events after it, and reports a gap for what is no longer retained. Needs a read key.',
      querystring: Type.Object(
        {
          token: Type.Optional(Type.String({ maxLength: 200 })),
          since: Type.Optional(Type.Integer({ minimum: 0 })),
          epoch: Type.Optional(Type.String({ maxLength: 64 })),
          namespace: Type.Optional(NamespaceName),
        },
        { additionalProperties: false },
      ),
    },
    preHandler: async (request) => {
      connections.checkOwner(ownerOf(request));
      // A namespace out of the key's reach is refused before the upgrade (404), as a missing one.
      readNamespaces(request, (request.query as { namespace?: string }).namespace);
    },
    handler: async () => {
      throw upgradeRequired();
    },
    wsHandler: (socket, request) => {
      const { since, epoch, namespace } = request.query as { since?: number; epoch?: string; namespace?: string };
      events.open(socket, ownerOf(request), since === undefined ? undefined : { since, epoch }, readNamespaces(request, namespace));
    },
  });
};
