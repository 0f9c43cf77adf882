import type { WebSocket } from 'ws';
import { CloseCodes } from '../../protocol/agent-stream.js';

/**
 * Every open WebSocket, agents and observers alike: the connection cap, ping/pong liveness, and a
 * send that cuts off a consumer whose unsent bytes pass the cap instead of letting them pile up in
 * the server's memory.
 */
export class Connections {
  private readonly sockets = new Map<WebSocket, { alive: boolean }>();
  private pinger: NodeJS.Timeout | undefined;
  /** Sockets closed for being too slow, since start. */
  slowConsumersCut = 0;
  /** The most unsent bytes any socket held when something was sent to it: what the cap keeps bounded. */
  peakBufferedBytes = 0;

  constructor(private readonly limits: { maxConnections: number; maxBufferedBytes: number; pingMs: number }) {}

  get size(): number {
    return this.sockets.size;
  }

  start(): void {
    this.pinger = setInterval(() => this.pingAll(), this.limits.pingMs);
    this.pinger.unref();
  }

  stop(): void {
    clearInterval(this.pinger);
  }

  /** Takes a new socket in, or closes it with 1013 when the cap is reached. Returns whether it was admitted. */
  admit(socket: WebSocket): boolean {
    if (this.sockets.size >= this.limits.maxConnections) {
      socket.close(CloseCodes.CONNECTION_LIMIT, `connection limit reached (${this.limits.maxConnections})`);
      return false;
    }
    const state = { alive: true };
    this.sockets.set(socket, state);
    socket.on('pong', () => (state.alive = true));
    socket.once('close', () => this.sockets.delete(socket));
    return true;
  }

  /** Sends one text frame; a socket already holding more unsent bytes than the cap is cut off instead. */
  send(socket: WebSocket, text: string): boolean {
    if (socket.readyState !== socket.OPEN) return false;
    const buffered = socket.bufferedAmount;
    if (buffered > this.peakBufferedBytes) this.peakBufferedBytes = buffered;
    if (buffered > this.limits.maxBufferedBytes) {
      this.cutOff(socket);
      return false;
    }
    socket.send(text);
    return true;
  }

  private cutOff(socket: WebSocket): void {
    this.slowConsumersCut++;
    // The close frame would wait behind the unsent bytes; destroy the socket so its buffers go now.
    socket.close(CloseCodes.SLOW_CONSUMER, 'slow consumer: unsent bytes over the limit');
    socket.terminate();
  }

  /** A peer that did not answer the last ping is gone (cable pulled, process frozen): drop it. */
  private pingAll(): void {
    for (const [socket, state] of this.sockets) {
      if (!state.alive) {
        socket.terminate();
        continue;
      }
      state.alive = false;
      socket.ping();
    }
  }
}
