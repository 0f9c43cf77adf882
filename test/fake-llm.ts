import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { FleetdConfig } from '../src/config.js';
import type { PipelineSetup } from '../src/pipelines/pipelines.js';
import { type Api, eventually, startTestServer, type TestServer } from './helpers.js';

/** How the fake provider answers one request. */
export interface Behaviour {
  status?: number;
  headers?: Record<string, string>;
  /** A raw body instead of the well-formed default (e.g. malformed JSON). */
  body?: string;
  /** Answer only after this many ms. */
  delayMs?: number;
  /** Answer only when this promise settles (or never, if it never does). */
  hold?: Promise<unknown>;
}

export interface SeenRequest {
  path: string;
  body: any;
  /** The last message's content, or the first input to embed. */
  text: string;
  authorization: string | undefined;
  /** Epoch ms it arrived. */
  at: number;
}

/**
 * A real OpenAI-compatible HTTP server on a local port: chat completions and embeddings, with
 * scripted misbehaviour. Requests whose text starts with a `when(...)` marker take that script's next
 * behaviour; all others, and scripts run dry, get a well-formed answer at once.
 */
export class FakeLlm {
  readonly requests: SeenRequest[] = [];
  private readonly scripts: { marker: string; behaviours: Behaviour[] }[] = [];
  private readonly waiters: { test: (r: SeenRequest) => boolean; resolve: (r: SeenRequest) => void }[] = [];
  private server!: Server;
  url = '';

  async start(): Promise<this> {
    this.server = createServer((req, res) => void this.handle(req, res));
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/v1`;
    return this;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    this.server.close();
  }

  when(marker: string, ...behaviours: Behaviour[]): this {
    this.scripts.push({ marker, behaviours });
    return this;
  }

  /** Requests whose text starts with the marker. */
  seen(marker: string): SeenRequest[] {
    return this.requests.filter((r) => r.text.startsWith(marker));
  }

  /** Resolves at the next request whose text starts with the marker (or at once if `count` have been seen). */
  nextRequest(marker: string, count = 1): Promise<SeenRequest> {
    const seen = this.seen(marker);
    if (seen.length >= count) return Promise.resolve(seen[count - 1]);
    return new Promise((resolve) => {
      this.waiters.push({ test: (r) => r.text.startsWith(marker) && this.seen(marker).length >= count, resolve });
    });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = JSON.parse(Buffer.concat(chunks).toString() || '{}');
    const text: string = req.url?.endsWith('/embeddings') ? String(body.input?.[0] ?? '') : String(body.messages?.at(-1)?.content ?? '');
    const seen: SeenRequest = { path: req.url ?? '', body, text, authorization: req.headers.authorization, at: Date.now() };
    this.requests.push(seen);
    for (const w of [...this.waiters]) {
      if (w.test(seen)) {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        w.resolve(seen);
      }
    }
    const script = this.scripts.find((s) => text.startsWith(s.marker) && s.behaviours.length > 0);
    const b: Behaviour = script?.behaviours.shift() ?? {};
    if (b.delayMs) await new Promise((r) => setTimeout(r, b.delayMs));
    if (b.hold) await b.hold;
    if (res.destroyed) return;
    res.writeHead(b.status ?? 200, { 'content-type': 'application/json', ...b.headers });
    if (b.body !== undefined) return void res.end(b.body);
    if ((b.status ?? 200) >= 400) return void res.end(JSON.stringify({ error: { message: `scripted ${b.status}` } }));
    if (req.url?.endsWith('/embeddings')) {
      const data = (body.input as string[]).map((s, index) => ({ index, embedding: [s.length, 1, 0] }));
      return void res.end(JSON.stringify({ model: body.model, data, usage: { total_tokens: 3 } }));
    }
    res.end(
      JSON.stringify({
        model: body.model,
        choices: [{ index: 0, message: { role: 'assistant', content: `reply to: ${text}` } }],
        usage: { prompt_tokens: 5, completion_tokens: 5, total_tokens: 10 },
      }),
    );
  }
}

/** A fleetd server with pipelines, whose providers find the fake key in FAKE_KEY. */
export function startPipelineServer(setup: PipelineSetup, overrides: Partial<FleetdConfig> = {}): Promise<TestServer> {
  return startTestServer(overrides, { env: { FAKE_KEY: 'sk-secret-123' }, pipelines: setup });
}

/** Polls the run until it has finished; returns it. */
export async function finishedRun(api: Api, id: number, timeoutMs = 10_000): Promise<any> {
  let run: any;
  await eventually(async () => {
    run = (await api.get(`/v1/pipelines/runs/${id}`)).body.run;
    return ['completed', 'failed', 'cancelled'].includes(run.status);
  }, timeoutMs, `run ${id} to finish`);
  return run;
}

export const never = new Promise<void>(() => {});
