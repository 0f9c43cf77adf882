import type { Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

interface Connection {
  /** Responses to requests read on it that have not closed yet. */
  inFlight: Set<ServerResponse>;
}

/**
 * Makes `server.close()` finish once the requests in flight are answered, whoever is connected.
 *
 * Node 20's `server.close()` calls `closeIdleConnections()`, which ends keep-alive connections
 * between requests but misses two kinds, so the close waited for their clients to leave (about 70 s
 * in process; `fleetd start` ran out its 10 s on SIGTERM):
 * - a connection that was accepted and has not sent a byte: Node's connection list counts it as a
 *   request in progress until `headersTimeout` (nodejs/node#63470, fixed in newer Node). Node's fetch
 *   (undici) opens one ahead of need, for instance when an SDK long-poll agent stops;
 * - a keep-alive connection whose request was in flight at the close: once answered it is idle, but
 *   nothing looks again, so it stays until `keepAliveTimeout`.
 *
 * So, on close, this destroys every connection that has never sent a byte, answers each request in
 * flight with `Connection: close` (or, when its headers have already gone out, ends the connection
 * once its last response has closed). A request in flight, or one partly sent, is never cut: it is
 * answered (Fastify answers those that arrive while closing with 503 and `Connection: close`;
 * fleetd answers its waiting long-polls before it closes the server). Upgraded connections
 * (WebSockets) are the gateway's to close.
 */
export function closeQuietConnectionsOnClose(server: Server, secure: boolean): void {
  const connections = new Map<Socket, Connection>();
  let closing = false;

  // Over TLS a request's socket is the TLS socket; a raw connection still in its handshake has sent
  // no request either.
  server.on(secure ? 'secureConnection' : 'connection', (socket: Socket) => {
    connections.set(socket, { inFlight: new Set() });
    socket.once('close', () => connections.delete(socket));
  });
  const handshaking = new Set<Socket>();
  if (secure) {
    server.on('connection', (socket: Socket) => {
      handshaking.add(socket);
      socket.once('close', () => handshaking.delete(socket));
    });
    server.on('secureConnection', (socket: Socket & { _parent?: Socket }) => {
      if (socket._parent) handshaking.delete(socket._parent);
    });
  }

  server.on('request', (req, res) => {
    const socket = req.socket;
    const connection = connections.get(socket);
    if (!connection) return;
    connection.inFlight.add(res);
    res.once('close', () => {
      connection.inFlight.delete(res);
      if (closing && connection.inFlight.size === 0 && !socket.destroyed) socket.destroySoon();
    });
  });
  server.on('upgrade', (req) => connections.delete(req.socket));

  const closeIdle = server.closeIdleConnections.bind(server);
  server.closeIdleConnections = () => {
    closing = true;
    closeIdle();
    for (const socket of handshaking) if (socket.bytesRead === 0) socket.destroy();
    for (const [socket, connection] of connections) {
      // A connection that has read no byte has had no request.
      if (socket.bytesRead === 0) socket.destroy();
      // Its last response then ends the connection (or the close handler above does, once it has closed).
      for (const res of connection.inFlight) if (!res.headersSent) res.shouldKeepAlive = false;
    }
  };
}
