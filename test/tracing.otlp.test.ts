import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { rmSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { FleetClient } from '../src/client/index.js';
import { startServer, type FleetServer } from '../src/server/server.js';
import { Api, adminKeyFor, eventually, tempDir } from './helpers.js';
import { connect } from './ws-helpers.js';

/** A span as the OTLP/HTTP JSON encoding carries it, ids in hex. */
interface ReceivedSpan {
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  kind: number;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  attributes: Record<string, unknown>;
  links: { traceId: string; spanId: string }[];
  service: string;
}

/** OTLP/JSON ids are hex; older encoders sent base64: both read as hex. */
const hex = (id: string | undefined): string => (!id ? '' : /^[0-9a-f]+$/.test(id) ? id : Buffer.from(id, 'base64').toString('hex'));

function attributesOf(list: { key: string; value: Record<string, unknown> }[] = []): Record<string, unknown> {
  return Object.fromEntries(list.map(({ key, value }) => [key, Object.values(value)[0]]));
}

/** A real OTLP/HTTP receiver: accepts POST /v1/traces (JSON) and keeps every span. */
async function startReceiver(): Promise<{ server: Server; url: string; spans: ReceivedSpan[]; contentTypes: Set<string> }> {
  const spans: ReceivedSpan[] = [];
  const contentTypes = new Set<string>();
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.method !== 'POST' || req.url !== '/v1/traces') return res.writeHead(404).end();
      contentTypes.add(String(req.headers['content-type']));
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      for (const rs of body.resourceSpans ?? []) {
        const service = String(attributesOf(rs.resource?.attributes)['service.name']);
        for (const ss of rs.scopeSpans ?? []) {
          for (const s of ss.spans ?? []) {
            spans.push({
              traceId: hex(s.traceId),
              spanId: hex(s.spanId),
              parentSpanId: hex(s.parentSpanId),
              name: s.name,
              kind: s.kind,
              startTimeUnixNano: String(s.startTimeUnixNano),
              endTimeUnixNano: String(s.endTimeUnixNano),
              attributes: attributesOf(s.attributes),
              links: (s.links ?? []).map((l: { traceId: string; spanId: string }) => ({ traceId: hex(l.traceId), spanId: hex(l.spanId) })),
              service,
            });
          }
        }
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return { server, url: `http://127.0.0.1:${port}`, spans, contentTypes };
}

describe('tracing with OpenTelemetry (OTEL_EXPORTER_OTLP_ENDPOINT set)', () => {
  let receiver: Awaited<ReturnType<typeof startReceiver>>;
  let server: FleetServer;
  let api: Api;
  const dataDir = tempDir();
  // The caller's own trace, as its instrumentation would send it.
  const callerTrace = randomBytes(16).toString('hex');
  const callerSpan = randomBytes(8).toString('hex');
  let taskId: number;
  const traceparents: string[] = [];
  let runId: number;

  before(async () => {
    receiver = await startReceiver();
    const adminKey = adminKeyFor({ dataDir });
    server = await startServer(
      { host: '127.0.0.1', port: 0, adminKey, dataDir },
      {
        logger: false,
        env: { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_SERVICE_NAME: 'fleetd-under-test' },
        pipelines: {
          functions: { count: (ctx) => String((ctx.input as { text: string }).text).split(/\s+/).length },
          pipelines: [{ name: 'words', steps: [{ name: 'count', kind: 'code', fn: 'count' }] }],
        },
      },
    );
    api = new Api(server.url, adminKey);

    // A task submitted inside the caller's trace, failed once and completed by an agent of the SDK.
    const submitted = await api.post('/v1/tasks', { type: 'traced', backoffMs: 0, maxAttempts: 3 }, { traceparent: `00-${callerTrace}-${callerSpan}-01` });
    assert.equal(submitted.status, 201);
    taskId = submitted.body.task.id;
    const client = new FleetClient({ url: server.url, apiKey: adminKey });
    const agent = client.agent({ name: 'tracer', capabilities: ['traced'], transport: 'poll' });
    try {
      void agent.work(async (task) => {
        traceparents.push(task.traceparent ?? '');
        if (traceparents.length === 1) throw new Error('first attempt fails');
        return { ok: true };
      });
      await eventually(async () => (await api.get(`/v1/tasks/${taskId}`)).body.status === 'completed', 10_000, 'the task to complete');
    } finally {
      await agent.stop();
    }

    const run = await api.post('/v1/pipelines/words/runs', { input: { text: 'three small words' } });
    runId = run.body.run.id;
    await eventually(async () => (await api.get(`/v1/pipelines/runs/${runId}`)).body.run.status === 'completed', 10_000, 'the run to complete');

    // A message on the observer stream.
    const observer = await connect(server.url + '/v1/events', { authorization: `Bearer ${adminKey}` });
    observer.send({ type: 'subscribe', topics: ['tasks'] });
    await observer.next('subscribed');
    await observer.close();

    // Closing flushes every span still waiting in the batch.
    await server.close();
  });

  after(async () => {
    await server?.close();
    receiver?.server.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  const named = (name: string) => receiver.spans.filter((s) => s.name === name);
  const one = (name: string, where: (s: ReceivedSpan) => boolean = () => true) => {
    const found = named(name).filter(where);
    assert.equal(found.length, 1, `one ${name} span (got ${found.length}; all: ${receiver.spans.map((s) => s.name).join(', ')})`);
    return found[0];
  };

  it('exports over OTLP/HTTP in JSON, as the service OTEL_SERVICE_NAME names', () => {
    assert.ok(receiver.spans.length > 0);
    assert.deepEqual([...receiver.contentTypes], ['application/json']);
    assert.ok(receiver.spans.every((s) => s.service === 'fleetd-under-test'));
  });

  it('makes a span per HTTP request, a child of the caller\'s span when it sends traceparent', () => {
    const submit = one('POST /v1/tasks');
    assert.equal(submit.traceId, callerTrace);
    assert.equal(submit.parentSpanId, callerSpan);
    assert.equal(submit.kind, 2, 'SERVER');
    assert.equal(submit.attributes['http.response.status_code'], 201);
    assert.equal(submit.attributes['http.route'], '/v1/tasks');
  });

  it('traces a task from submit through each attempt to completion, as one trace', () => {
    const root = one('task traced', (s) => s.attributes['fleetd.task.id'] === taskId);
    assert.equal(root.parentSpanId, '');
    assert.equal(root.attributes['fleetd.task.status'], 'completed');
    const inTask = receiver.spans.filter((s) => s.traceId === root.traceId);

    const submit = one('task.submit', (s) => s.traceId === root.traceId);
    assert.equal(submit.parentSpanId, root.spanId);
    // Linked to the request that submitted it, in the caller's trace.
    assert.deepEqual(submit.links, [{ traceId: callerTrace, spanId: one('POST /v1/tasks').spanId }]);

    const attempts = inTask.filter((s) => s.name === 'task.attempt').sort((a, b) => Number(a.attributes['fleetd.task.attempt']) - Number(b.attributes['fleetd.task.attempt']));
    assert.deepEqual(attempts.map((a) => [a.attributes['fleetd.task.attempt'], a.attributes['fleetd.task.outcome'], a.parentSpanId]), [
      [1, 'failed', root.spanId],
      [2, 'completed', root.spanId],
    ]);
    assert.ok(BigInt(root.startTimeUnixNano) <= BigInt(attempts[0].startTimeUnixNano));
    assert.ok(BigInt(attempts[1].endTimeUnixNano) <= BigInt(root.endTimeUnixNano));
  });

  it('gives the agent each attempt\'s traceparent, and the SDK sends it so that its reports join the task\'s trace', () => {
    const root = one('task traced', (s) => s.attributes['fleetd.task.id'] === taskId);
    const attempts = named('task.attempt').filter((s) => s.traceId === root.traceId);
    const byNumber = new Map(attempts.map((a) => [a.attributes['fleetd.task.attempt'], a.spanId]));
    assert.deepEqual(traceparents, [`00-${root.traceId}-${byNumber.get(1)}-01`, `00-${root.traceId}-${byNumber.get(2)}-01`]);

    const fail = one('POST /v1/tasks/:id/fail');
    assert.equal(fail.traceId, root.traceId);
    assert.equal(fail.parentSpanId, byNumber.get(1));
    const complete = one('POST /v1/tasks/:id/complete');
    assert.equal(complete.traceId, root.traceId);
    assert.equal(complete.parentSpanId, byNumber.get(2));
  });

  it('traces a pipeline run and its steps', () => {
    const run = one('pipeline words', (s) => s.attributes['fleetd.run.id'] === runId);
    assert.equal(run.parentSpanId, '');
    assert.equal(run.attributes['fleetd.run.status'], 'completed');
    const step = one('step count', (s) => s.attributes['fleetd.run.id'] === runId);
    assert.equal(step.traceId, run.traceId);
    assert.equal(step.parentSpanId, run.spanId);
    assert.equal(step.attributes['fleetd.step.outcome'], 'completed');
  });

  it('makes a span per WebSocket message handled', () => {
    const message = one('WS events message');
    assert.equal(message.kind, 2, 'SERVER');
  });
});

describe('tracing without OTEL_EXPORTER_OTLP_ENDPOINT', () => {
  it('gives leased tasks no traceparent', async () => {
    const dataDir = tempDir();
    const adminKey = adminKeyFor({ dataDir });
    const server = await startServer({ host: '127.0.0.1', port: 0, adminKey, dataDir }, { logger: false, env: {} });
    try {
      const api = new Api(server.url, adminKey);
      await api.submit({ type: 'untraced' });
      const agent = await api.registerAgent(['untraced']);
      const [task] = await api.claim(agent.id);
      assert.equal(task.status, 'leased');
      assert.equal('traceparent' in task, false);
    } finally {
      await server.close();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
