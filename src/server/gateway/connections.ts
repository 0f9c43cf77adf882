import type { Socket } from 'node:net';
import type { WebSocket } from 'ws';
import { FleetError } from '../../domain/errors.js';
import { CloseCodes } from '../../protocol/agent-stream.js';
import { Sweep } from './sweep.js';

const PLAIN = { compress: false } as const;
const DEFLATED = { compress: true } as const;
/** The share of wsPingMs a ping is given to be answered. */
const PONG_WAIT = 0.9;
/** A socket corked for the tick is written out once it holds this many bytes of the tick's frames. */
const FLUSH_CORKED_BYTES = 16 * 1024;

/** Whether a socket answered its last ping (`pingedAt`, performance.now()'s clock). */
interface Liveness {
  alive: boolean;
  pingedAt: number;
}

/**
 * Every open WebSocket, agents and observers alike: the connection cap, ping/pong liveness, and a
 * send that cuts off a consumer whose unsent bytes pass the cap instead of letting them pile up in
 * the server's memory.
 */
export class Connections {
  private readonly sockets = new Map<WebSocket, Liveness>();
  /** Open sockets by owner (API key, agent, or address when auth is off). */
  private readonly owners = new Map<string, number>();
  /** Pings every socket once every pingMs, a slice at a time. */
  private readonly pinger: Sweep<WebSocket, Liveness>;
  /** Sockets closed for being too slow, since start. */
  slowConsumersCut = 0;
  /** The most unsent bytes any socket held when something was sent to it: what the cap keeps bounded. */
  peakBufferedBytes = 0;
  /** TCP sockets holding this tick's frames until uncorkAll, with the bytes each held unsent when corked. */
  private corked = new Map<Socket, number>();

  constructor(
    private readonly limits: {
      maxConnections: number;
      maxPerOwner: number;
      maxBufferedBytes: number;
      pingMs: number;
      /** Messages of fewer characters are sent uncompressed, even to a peer that negotiated permessage-deflate. */
      deflateMinChars: number;
    },
  ) {
    this.pinger = new Sweep(this.sockets, limits.pingMs, (socket, state) => this.ping(socket, state));
  }

  get size(): number {
    return this.sockets.size;
  }

  start(): void {
    this.pinger.start();
  }

  stop(): void {
    this.pinger.stop();
  }

  /** Refuses (429, before the upgrade) an owner that already holds its most sockets. */
  checkOwner(owner: string): void {
    const open = this.owners.get(owner) ?? 0;
    if (open >= this.limits.maxPerOwner) {
      throw new FleetError('FLEETD_ERR_TOO_MANY_CONNECTIONS', `this credential already holds ${open} WebSockets, the most it may`, {
        limit: this.limits.maxPerOwner,
      });
    }
  }

  /**
   * Takes a new socket in, or closes it with 1013 when the server's cap or its owner's is reached
   * (sockets that were checked together may race past checkOwner). Returns whether it was admitted.
   */
  admit(socket: WebSocket, owner: string): boolean {
    const owned = this.owners.get(owner) ?? 0;
    if (this.sockets.size >= this.limits.maxConnections || owned >= this.limits.maxPerOwner) {
      const which = owned >= this.limits.maxPerOwner ? 'per credential' : 'of the server';
      socket.close(CloseCodes.CONNECTION_LIMIT, `connection limit ${which} reached`);
      return false;
    }
    const state: Liveness = { alive: true, pingedAt: 0 };
    this.sockets.set(socket, state);
    this.owners.set(owner, owned + 1);
    socket.on('pong', () => (state.alive = true));
    socket.once('close', () => {
      this.sockets.delete(socket);
      const left = (this.owners.get(owner) ?? 1) - 1;
      if (left === 0) this.owners.delete(owner);
      else this.owners.set(owner, left);
    });
    return true;
  }

  /**
   * Sends one text frame, compressed when the peer negotiated permessage-deflate and the text has
   * `deflateMinChars` or more (unless `compress: false`); a socket already holding more unsent bytes
   * than the cap is cut off instead. ws's own threshold does not do this: it holds only where the
   * peer gave up context takeover, and browsers and ws clients offer it by default, so every frame
   * went through zlib's threads.
   */
  send(socket: WebSocket, text: string, options?: { compress: false }): boolean {
    if (socket.readyState !== socket.OPEN) return false;
    // ws keeps its TCP socket private (the SDK corks its own the same way).
    const raw = (socket as unknown as { _socket?: Socket })._socket;
    const unsentAtCork = raw ? this.corked.get(raw) : undefined;
    const corkedBytes = raw && unsentAtCork !== undefined ? raw.writableLength - unsentAtCork : 0;
    // This tick's own frames wait in the corked socket: they are no backlog of the peer's (a replay
    // of thousands of events in one tick would otherwise cut off the fastest observer).
    const buffered = socket.bufferedAmount - corkedBytes;
    if (buffered > this.peakBufferedBytes) this.peakBufferedBytes = buffered;
    if (buffered > this.limits.maxBufferedBytes) {
      this.cutOff(socket);
      return false;
    }
    if (raw && unsentAtCork === undefined) this.corkForThisTick(raw);
    else if (raw && corkedBytes >= FLUSH_CORKED_BYTES) {
      // A burst: what it holds leaves now, and what the peer does not take counts against the cap
      // again, as it would have uncorked. Only frames of a few KiB wait for the end of the tick.
      raw.uncork();
      raw.cork();
      this.corked.set(raw, raw.writableLength);
    }
    socket.send(text, options?.compress === false || text.length < this.limits.deflateMinChars ? PLAIN : DEFLATED);
    return true;
  }

  /**
   * Frames sent to one socket in one tick leave in one system call: a completion's ack and the task
   * its freed credit claimed are written together (each would be a write of its own, and a wake-up
   * of the agent's read). The socket is uncorked once the tick's promise jobs have run, before the
   * event loop goes on: nothing waits for a later turn.
   */
  private corkForThisTick(raw: Socket): void {
    raw.cork();
    this.corked.set(raw, raw.writableLength);
    if (this.corked.size === 1) process.nextTick(this.uncorkAll);
  }

  private readonly uncorkAll = (): void => {
    const corked = this.corked;
    this.corked = new Map();
    for (const raw of corked.keys()) raw.uncork();
  };

  private cutOff(socket: WebSocket): void {
    this.slowConsumersCut++;
    // The close frame would wait behind the unsent bytes; destroy the socket so its buffers go now.
    socket.close(CloseCodes.SLOW_CONSUMER, 'slow consumer: unsent bytes over the limit');
    socket.terminate();
  }

  /**
   * A peer that did not answer the last ping is gone (cable pulled, process frozen): drop it. A
   * ping has about a period to be answered: the sweep visits a socket about once a period, but
   * sooner after a round whose ticks ran late, and a ping that recent is waited for.
   */
  private ping(socket: WebSocket, state: Liveness): void {
    const now = performance.now();
    if (!state.alive) {
      if (now - state.pingedAt >= this.limits.pingMs * PONG_WAIT) socket.terminate();
      return;
    }
    state.alive = false;
    state.pingedAt = now;
    socket.ping();
  }
}
