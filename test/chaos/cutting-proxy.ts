import { once } from 'node:events';
import { createServer, connect, type Server, type Socket } from 'node:net';

export type Direction = 'to-server' | 'to-client';

interface Cut {
  direction: Direction;
  /** Whether this chunk is the one to cut in the middle of. */
  match(chunk: Buffer): boolean;
  done: () => void;
}

/**
 * A TCP proxy between a client and fleetd that passes bytes through untouched until told to cut:
 * then, in the first chunk that matches, it forwards only the first half and destroys both sides,
 * as a network that drops in the middle of a request body, a response or a WebSocket frame.
 */
export class CuttingProxy {
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private readonly cuts: Cut[] = [];
  /** Connections cut so far. */
  cutCount = 0;
  /** The local port of every connection the proxy opened to fleetd: fleetd sees them as remote ports. */
  readonly upstreamPorts = new Set<number>();

  private constructor(private readonly targetPort: number) {
    this.server = createServer((client) => this.pipe(client));
  }

  /** Proxies to the port of `targetUrl` (any scheme: http, postgres, redis) on 127.0.0.1. */
  static async start(targetUrl: string): Promise<CuttingProxy> {
    const proxy = new CuttingProxy(Number(new URL(targetUrl).port));
    proxy.server.listen(0, '127.0.0.1');
    await once(proxy.server, 'listening');
    return proxy;
  }

  get url(): string {
    const address = this.server.address();
    if (address === null || typeof address === 'string') throw new Error('not listening');
    return `http://127.0.0.1:${address.port}`;
  }

  /** Cuts the next chunk in `direction` that `match` accepts; resolves once it has been cut, rejects if none comes. */
  cutWhen(direction: Direction, match: (chunk: Buffer) => boolean, timeoutMs = 20_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const cut: Cut = { direction, match, done: () => (clearTimeout(timer), resolve()) };
      const timer = setTimeout(() => {
        this.cuts.splice(this.cuts.indexOf(cut), 1);
        reject(new Error(`no ${direction} chunk to cut within ${timeoutMs} ms`));
      }, timeoutMs);
      this.cuts.push(cut);
    });
  }

  private pipe(client: Socket): void {
    const upstream = connect(this.targetPort, '127.0.0.1', () => this.upstreamPorts.add(upstream.localPort!));
    for (const socket of [client, upstream]) {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
      socket.on('error', () => {});
    }
    const relay = (from: Socket, to: Socket, direction: Direction) =>
      from.on('data', (chunk: Buffer) => {
        const i = this.cuts.findIndex((cut) => cut.direction === direction && cut.match(chunk));
        if (i < 0) {
          to.write(chunk);
          return;
        }
        const [cut] = this.cuts.splice(i, 1);
        this.cutCount++;
        to.write(chunk.subarray(0, Math.floor(chunk.length / 2)), () => {
          client.destroy();
          upstream.destroy();
          cut.done();
        });
      });
    relay(client, upstream, 'to-server');
    relay(upstream, client, 'to-client');
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  }

  /** Cuts every connection open now, both sides at once, as a network between the two that fails; new ones pass again. */
  cutAll(): number {
    const pairs = Math.ceil(this.sockets.size / 2);
    for (const socket of this.sockets) socket.destroy();
    this.cutCount += pairs;
    return pairs;
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    this.server.close();
    await once(this.server, 'close');
  }
}
