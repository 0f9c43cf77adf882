import type { Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

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
  // Only connections are tracked, not requests: a listener on every response had cost each
  // heartbeat about a microsecond. At the close, a connection's response in flight is the one Node
  // has given the socket (`_httpMessage`, as http-terminator reads it too).
  const connections = new Set<Socket>();

  // Over TLS a request's socket is the TLS socket; a raw connection still in its handshake has sent
  // no request either.
  server.on(secure ? 'secureConnection' : 'connection', (socket: Socket) => {
    connections.add(socket);
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
  server.on('upgrade', (req) => connections.delete(req.socket));

  const ending = new WeakSet<ServerResponse>();
  const closeIdle = server.closeIdleConnections.bind(server);
  server.closeIdleConnections = () => {
    closeIdle();
    for (const socket of handshaking) if (socket.bytesRead === 0) socket.destroy();
    for (const socket of connections) {
      // A connection that has read no byte has had no request.
      if (socket.bytesRead === 0) {
        socket.destroy();
        continue;
      }
      const res = (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage;
      if (!res || ending.has(res)) continue;
      ending.add(res);
      // Its response ends the connection; one whose headers have gone out ends it once it has closed.
      if (!res.headersSent) res.shouldKeepAlive = false;
      else res.once('close', () => socket.destroyed || socket.destroySoon());
    }
  };
}
