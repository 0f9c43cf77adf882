import { randomUUID } from 'node:crypto';
import { STATUS_CODES, type IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { constants as zlib } from 'node:zlib';
import compress from '@fastify/compress';
import fp from 'fastify-plugin';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { redactedFields, type FleetdConfig } from '../config.js';
import { redactUrl } from './redaction.js';
import { FleetError, type ErrorCode } from '../domain/errors.js';

const CLIENT_ID = /^[\w.:@/-]{1,128}$/;

/**
 * Bodies of 8 KiB and more are compressed. A smaller one (a submit's answer, a claim of a few tasks)
 * cost the server about 100 µs to compress and the client a decompression stream: about 0.5 ms more
 * for each round trip, to save a few KB, less than that on a 100 Mbit/s link. Brotli at quality 1:
 * a 20-task submit's 12.5 KB answer took 14 µs to 547 bytes, against 79 µs to 494 at quality 4, and
 * a list of 100 tasks (67 KB) 35 µs to 1.8 KB against 227 µs to 1.6 KB. A tenth more bytes of a
 * body already 97 % smaller cost a link less than the CPU saved costs the server.
 */
export const compression = { threshold: 8 * 1024, brotliQuality: 1, syncUpTo: 64 * 1024 } as const;

/**
 * Answers JSON already written as text (a claim's tasks, their payloads spliced in as stored): sent
 * as it is, past the route's serializer, and compressed like any other answer.
 */
export function sendJsonText(reply: FastifyReply, text: string): FastifyReply {
  return reply.header('content-type', 'application/json; charset=utf-8').send(text);
}

/** A client's own x-request-id when it is a sane token (so logs join across services), else a fresh one. */
export function requestId(req: IncomingMessage): string {
  const given = req.headers['x-request-id'];
  return typeof given === 'string' && CLIENT_ID.test(given) ? given : randomUUID();
}

/**
 * Requests the HTTP parser refuses (headers over the size limit, bytes that are not HTTP, a request
 * too slow to arrive) never reach a route or the error handler: they get fleetd's JSON error all the
 * same, written straight to the socket, which is then closed. Fastify's default answers in a shape
 * of its own.
 */
export function clientErrorHandler(err: NodeJS.ErrnoException, socket: Duplex): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const [code, message]: [ErrorCode, string] =
    err.code === 'HPE_HEADER_OVERFLOW' ? ['FLEETD_ERR_HEADERS_TOO_LARGE', 'the request headers are too large']
    : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? ['FLEETD_ERR_REQUEST_TIMEOUT', 'the request took too long to arrive']
    : ['FLEETD_ERR_BAD_REQUEST', 'the request is not valid HTTP'];
  const error = new FleetError(code, message, { reason: err.code ?? err.message });
  const body = JSON.stringify(error.toJSON());
  if (socket.writable) {
    socket.write(
      `HTTP/1.1 ${error.status} ${STATUS_CODES[error.status]}\r\nContent-Type: application/json; charset=utf-8\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy();
}

/** The largest refused body fleetd still reads to its end, so that its sender sees the 413. */
const DRAIN_OVERSIZED_BODY_BYTES = 16 * 1024 * 1024;

const replyReady = Symbol('replyReady');
declare module 'fastify' {
  interface FastifyRequest {
    [replyReady]?: number;
  }
  interface FastifyContextConfig {
    /** The route waits on purpose (a long-poll): not logged as slow. */
    longPoll?: boolean;
  }
}

/**
 * HTTP behaviour every route shares: the request id on every response (Fastify puts it on every log
 * line as reqId), compression from 8 KiB, `Cache-Control: no-store` unless a route says otherwise
 * (fleetd's data is live), a warning for each request slower than slowRequestMs, and connections
 * closed after their reply once the server is closing.
 */
export const httpPlugin = fp<{ config: Readonly<FleetdConfig> }>(async (app: FastifyInstance, { config }) => {
  await app.register(compress, {
    threshold: compression.threshold,
    // A body up to 64 KiB is compressed in one call on the event loop, not through a stream and
    // the thread pool. The plugin's default on 2 cores streams from 8 KiB: a 20-task submit's
    // 12.5 KB answer then cost the server 780 µs of CPU, against 315 in one call, and a 60 KB one
    // 1,500-1,750 against 930; the call blocks the loop well under a millisecond.
    syncThreshold: compression.syncUpTo,
    encodings: ['br', 'gzip'],
    brotliOptions: { params: { [zlib.BROTLI_PARAM_QUALITY]: compression.brotliQuality } },
  });

  // Closing closes the idle keep-alive connections once; one busy at that moment would stay open
  // after its reply, and keep the server from closing until the client hangs up.
  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });

  app.addHook('onSend', (request, reply, payload, done) => {
    void reply.header('x-request-id', request.id);
    if (!reply.hasHeader('cache-control')) void reply.header('cache-control', 'no-store');
    if (closing) void reply.header('connection', 'close');
    // Fastify answers a body over the limit with `connection: close`, so as not to read it; a client
    // still sending it then meets a broken pipe instead of the 413. A body of modest size is read and
    // dropped instead (Node discards what the route did not read), so that every client gets the answer.
    else if (reply.statusCode === 413 && Number(request.headers['content-length']) <= DRAIN_OVERSIZED_BODY_BYTES) reply.removeHeader('connection');
    request[replyReady] = reply.elapsedTime;
    done(null, payload);
  });

  const fields = redactedFields(config);
  app.addHook('onResponse', (request, reply, done) => {
    done();
    const totalMs = reply.elapsedTime;
    if (totalMs < config.slowRequestMs || request.routeOptions.config?.longPoll) return;
    request.log.warn(
      {
        method: request.method,
        route: request.routeOptions.url ?? 'unmatched',
        // A WebSocket's credential may ride in its query (?token=); it must not ride into the logs.
        url: redactUrl(request.url, fields).replace(/([?&]token=)[^&]*/g, '$1***'),
        statusCode: reply.statusCode,
        totalMs: Math.round(totalMs),
        // How much of it went on sending the reply, after the handler was done.
        sendMs: Math.round(totalMs - (request[replyReady] ?? totalMs)),
      },
      'slow request',
    );
  });
});
