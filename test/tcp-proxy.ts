import { once } from 'node:events';
import { createServer, connect as tcpConnect, type AddressInfo, type Server, type Socket } from 'node:net';

/**
 * A real TCP proxy in front of the server that can cut every connection through it, refuse new ones
 * for a while, or hold back what the server sends while the clients' bytes still go through.
 */
export class CuttingProxy {
  private server!: Server;
  private readonly sockets = new Set<Socket>();
  private readonly pairs = new Set<{ client: Socket; upstream: Socket }>();
  connections = 0;
  refusing = false;
  private holding = false;

  async start(target: string): Promise<string> {
    const { hostname, port } = new URL(target);
    this.server = createServer((client) => {
      if (this.refusing) return client.destroy();
      this.connections++;
      const upstream = tcpConnect(Number(port), hostname);
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
        s.on('error', () => {});
      }
      const pair = { client, upstream };
      this.pairs.add(pair);
      client.on('close', () => this.pairs.delete(pair));
      client.pipe(upstream);
      if (!this.holding) upstream.pipe(client);
    });
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  /** While on, the server's bytes wait in the proxy (a slow or stalled link back); off, they flow again, in order. */
  holdReplies(on: boolean): void {
    if (on === this.holding) return;
    this.holding = on;
    for (const { client, upstream } of this.pairs) {
      if (on) upstream.unpipe(client);
      else upstream.pipe(client);
    }
  }

  /** Every connection dropped at once, without a goodbye: as a network cut does. */
  cut(): void {
    for (const s of this.sockets) s.destroy();
  }

  async stop(): Promise<void> {
    this.cut();
    await new Promise((r) => this.server.close(r));
  }
}
