import { once } from 'node:events';
import { createServer, connect as tcpConnect, type AddressInfo, type Server, type Socket } from 'node:net';

/** A real TCP proxy in front of the server that can cut every connection through it, or refuse new ones for a while. */
export class CuttingProxy {
  private server!: Server;
  private readonly sockets = new Set<Socket>();
  connections = 0;
  refusing = false;

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
      client.pipe(upstream).pipe(client);
    });
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
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
