import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { eventually, kill9, startTestServer, type TestServer } from './helpers.js';

/** A real local HTTP server standing in for an LLM provider: 429 with Retry-After for the first `limited` requests, then answers. */
function provider(limited: number): Promise<{ server: Server; url: string; seen: number[] }> {
  const seen: number[] = [];
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      seen.push(Date.now());
      if (seen.length <= limited) {
        res.writeHead(429, { 'retry-after': '1', 'content-type': 'application/json' }).end('{"error":"rate limited"}');
      } else res.writeHead(200, { 'content-type': 'text/plain' }).end('forty-two');
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/chat`, seen })));
}

describe('an SDK agent backing off on a provider 429', { timeout: 120_000 }, () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(() => server.stop());

  /** Releases the server took so far, by the way they came: `release` messages on agent streams, and the HTTP route. */
  async function releaseCounts(): Promise<{ overSocket: number; overHttp: number }> {
    const text = (await server.api.get('/metrics')).body as string;
    const value = (pattern: RegExp) => Number(text.match(pattern)?.[1] ?? 0);
    return {
      overSocket: value(/^fleetd_agent_stream_messages_total\{type="release"\} (\d+)$/m),
      overHttp: value(/^fleetd_http_request_duration_seconds_count\{method="POST",route="\/v1\/tasks\/:id\/release",status_code="200"\} (\d+)$/m),
    };
  }

  for (const transport of ['poll', 'ws'] as const) {
    it(`releases the task for the provider's Retry-After and spends no attempt (${transport})`, async () => {
      const llm = await provider(2);
      let child: ChildProcess | undefined;
      const type = `llm-call-${transport}`;
      const before = await releaseCounts();
      try {
        // maxAttempts 1: a failure would send the task to dead at once; a release must not.
        const task = await server.api.submit({ type, payload: { prompt: 'the answer?' }, maxAttempts: 1 });
        child = spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/releasing-agent.ts'], {
          env: { ...process.env, FLEETD_URL: server.url, FLEETD_API_KEY: server.adminKey, PROVIDER_URL: llm.url, TRANSPORT: transport, TASK_TYPE: type },
          stdio: ['ignore', 'pipe', 'inherit'],
        });
        let out = '';
        child.stdout!.on('data', (d) => (out += d));
        await eventually(async () => (await server.api.get(`/v1/tasks/${task.id}`)).body.status === 'completed', 60_000, 'the task completed');
        const done = (await server.api.get(`/v1/tasks/${task.id}`)).body;
        assert.deepEqual(done.result, { answer: 'forty-two' });
        assert.equal(done.attempts, 1, 'two releases spent no attempt');
        assert.equal(llm.seen.length, 3);
        assert.ok(llm.seen[1] - llm.seen[0] >= 900 && llm.seen[2] - llm.seen[1] >= 900, `each retry waited for Retry-After: ${llm.seen.map((t) => t - llm.seen[0])}`);
        assert.equal(out.match(/429 on/g)?.length, 2);
        // ctx.usage refuses bad numbers where they are reported (three a call), and changes nothing.
        assert.equal(out.match(/usage refused: usage\.\w+ must be/g)?.length, 9);
        // The usage ctx.usage reported went with both releases and the completion.
        const usage = (await server.api.get(`/v1/types/${type}`)).body.usage;
        assert.deepEqual(usage.day, { inputTokens: 30, outputTokens: 5, costUsd: 0.002, reports: 3 });
        // A WebSocket agent releases over its socket; a long-poll agent over HTTP.
        const after = await releaseCounts();
        if (transport === 'ws') {
          assert.equal(after.overSocket - before.overSocket, 2, 'two release messages on the agent stream');
          assert.equal(after.overHttp, before.overHttp, 'no release over HTTP');
        } else assert.equal(after.overHttp - before.overHttp, 2, 'two POST /v1/tasks/:id/release');
      } finally {
        if (child) await kill9(child);
        llm.server.close();
        await once(llm.server, 'close').catch(() => {});
      }
    });
  }

  it('refuses a release by an agent that does not hold the lease, and a negative delay, changing nothing', async () => {
    const { api } = server;
    const holder = await api.registerAgent(['rel']);
    const other = await api.registerAgent(['rel']);
    const submitted = await api.submit({ type: 'rel' });
    const [task] = await api.claim(holder.id, 1);
    assert.equal(task.id, submitted.id);
    const negative = await api.post(`/v1/tasks/${task.id}/release`, { agentId: holder.id, delayMs: -1 });
    assert.equal(negative.status, 400);
    assert.equal(negative.body.error.code, 'FLEETD_ERR_VALIDATION');
    const wrong = await api.post(`/v1/tasks/${task.id}/release`, { agentId: other.id, delayMs: 0 });
    assert.equal(wrong.status, 409);
    assert.equal(wrong.body.error.code, 'FLEETD_ERR_LEASE_LOST');
    const still = (await api.get(`/v1/tasks/${task.id}`)).body;
    assert.equal(still.status, 'leased');
    assert.equal(still.agentId, holder.id);
    const back = await api.post(`/v1/tasks/${task.id}/release`, { agentId: holder.id, delayMs: 0, reason: 'busy' });
    assert.equal(back.status, 200);
    assert.equal(back.body.status, 'queued');
    assert.equal(back.body.attempts, 0);
    assert.deepEqual(back.body.error, { code: 'FLEETD_ERR_RELEASED', message: 'busy', delayMs: 0 });
    assert.equal((await api.post(`/v1/tasks/${task.id}/release`, { agentId: holder.id, delayMs: 0 })).status, 409, 'released already');
  });
});
