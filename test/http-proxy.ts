import { createServer, request, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface HttpProxyOptions {
  /** Answers a request itself (a status and a JSON body), as a server just restarted would; undefined passes it on. */
  answer?: (req: IncomingMessage) => [number, unknown] | undefined;
  /** Notes each answer passed on, with the bytes of its body as they travel (compressed or not). */
  answered?: { method: string; url: string; bytes: number }[];
  /** A promise the request waits for before it is passed on (a link that holds it back); undefined passes it on at once. */
  hold?: (req: IncomingMessage) => Promise<void> | undefined;
  /** Told each uncompressed answer's body, once it has passed. */
  onBody?: (req: IncomingMessage, body: string) => void;
}

/**
 * A real HTTP proxy in front of `target` that, like many, does not pass WebSocket upgrades on.
 * `stop()` drops its connections and closes it.
 */
export async function startHttpProxy(target: string, options: HttpProxyOptions = {}): Promise<{ url: string; stop(): Promise<void> }> {
  const upstream = new URL(target);
  const proxy = createServer(async (req, res) => {
    const own = options.answer?.(req);
    if (own) {
      res.writeHead(own[0], { 'content-type': 'application/json' });
      res.end(JSON.stringify(own[1]));
      return;
    }
    const held = options.hold?.(req);
    if (held) {
      // The body waits in the request's stream meanwhile.
      req.pause();
      await held;
      if (res.destroyed) return;
    }
    const forward = request({ host: upstream.hostname, port: upstream.port, path: req.url, method: req.method, headers: req.headers }, (up) => {
      const answer = { method: req.method!, url: req.url!, bytes: 0 };
      options.answered?.push(answer);
      const chunks: Buffer[] = [];
      up.on('data', (chunk: Buffer) => {
        answer.bytes += chunk.length;
        if (options.onBody && !up.headers['content-encoding']) chunks.push(chunk);
      });
      up.on('end', () => options.onBody?.(req, Buffer.concat(chunks).toString()));
      res.writeHead(up.statusCode!, up.headers);
      up.pipe(res);
    });
    // Torn down with the test while a long-poll is in flight: that request's end is not what is tested.
    forward.on('error', () => res.destroy());
    req.pipe(forward);
    res.on('close', () => forward.destroy());
  });
  proxy.on('upgrade', (_req, socket) => socket.end('HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n'));
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`,
    async stop() {
      proxy.closeAllConnections();
      await new Promise((resolve) => proxy.close(resolve));
    },
  };
}
