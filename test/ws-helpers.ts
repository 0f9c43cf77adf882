import assert from 'node:assert/strict';
import Ajv from 'ajv';
import addFormats from 'ajv-formats';
import WebSocket from 'ws';
import { EventDataSchemas, type StreamEventName } from '../src/protocol/events.js';

const ajv = addFormats.default(new Ajv.default({ strict: false }));

/** Fails unless each observer-stream event has the data its schema gives and an ISO 8601 `at`. */
export function assertWireEvents(events: { name: string; data: unknown; at: unknown }[]): void {
  for (const e of events) {
    // Ajv keeps what it compiled by schema: each event name is compiled once.
    const check = ajv.compile(EventDataSchemas[e.name as StreamEventName]);
    assert.ok(check(e.data), `${e.name}: ${ajv.errorsText(check.errors)}`);
    assert.equal(new Date(e.at as string).toISOString(), e.at, `${e.name}: at`);
  }
}

/** A WebSocket test peer that queues what it receives and lets a test wait for the next message of a type. */
export class Peer {
  readonly received: any[] = [];
  private waiters: { match: (m: any) => boolean; resolve: (m: any) => void }[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;

  constructor(readonly socket: WebSocket) {
    socket.on('message', (data) => {
      const message = JSON.parse(data.toString());
      this.received.push(message);
      const i = this.waiters.findIndex((w) => w.match(message));
      if (i >= 0) this.waiters.splice(i, 1)[0].resolve(message);
    });
    this.closed = new Promise((resolve) => socket.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  }

  send(message: unknown): void {
    this.socket.send(JSON.stringify(message));
  }

  /** The first message of that type (and matching `where`) not yet taken, received or still to come. */
  next(type: string, where: (m: any) => boolean = () => true, timeoutMs = 5_000): Promise<any> {
    const match = (m: any) => m.type === type && where(m) && !m.taken;
    const take = (m: any) => Object.defineProperty(m, 'taken', { value: true, enumerable: false });
    const already = this.received.find(match);
    if (already) return Promise.resolve(take(already));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${type} message within ${timeoutMs} ms`)), timeoutMs);
      this.waiters.push({ match, resolve: (m) => (clearTimeout(timer), resolve(take(m))) });
    });
  }

  /** Every observer-stream event received so far, out of their batches. */
  events(): any[] {
    return this.received.filter((m) => m.type === 'events').flatMap((m) => m.events);
  }

  close(): Promise<{ code: number; reason: string }> {
    this.socket.close();
    return this.closed;
  }
}

/** Opens a socket; rejects with { status, body } when the server answers the upgrade with an HTTP error. */
export function connect(url: string, headers: Record<string, string> = {}, options: WebSocket.ClientOptions = {}): Promise<Peer> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url.replace(/^http/, 'ws'), { headers, ...options });
    const peer = new Peer(socket);
    socket.once('open', () => resolve(peer));
    socket.once('error', reject);
    socket.once('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => reject(Object.assign(new Error(`upgrade refused: ${res.statusCode}`), { status: res.statusCode, body: JSON.parse(body || 'null') })));
    });
  });
}

/** An observer of `/v1/events` on `base`, subscribed to `topics`. */
export async function observe(base: string, key: string | undefined, topics: string[], options: WebSocket.ClientOptions = {}): Promise<Peer> {
  const peer = await connect(`${base}/v1/events`, { authorization: `Bearer ${key}` }, options);
  peer.send({ type: 'subscribe', topics });
  await peer.next('subscribed');
  return peer;
}

/** Connects an agent's stream and waits for its welcome. */
export async function connectAgent(base: string, agent: { id: string; token: string }): Promise<{ peer: Peer; welcome: any }> {
  const peer = await connect(`${base}/v1/agents/${agent.id}/stream`, { authorization: `Bearer ${agent.token}` });
  const welcome = await peer.next('welcome');
  return { peer, welcome };
}
