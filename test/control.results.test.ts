import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { after, before, describe, it } from 'node:test';
import {
  FleetClient,
  NonRetryableError,
  TaskCancelledError,
  TaskFailedError,
  TaskWaitTimeoutError,
  type FleetAgent,
  type StreamEvent,
} from '../src/client/index.js';
import { eventually, startTestServer, type TestServer } from './helpers.js';

describe('results travel with events; waiting is one call', { timeout: 120_000 }, () => {
  let server: TestServer;
  let client: FleetClient;
  let agent: FleetAgent;

  before(async () => {
    server = await startTestServer({ eventResultMaxBytes: 200, taskBackoffMs: 10, maxTaskWaitMs: 20_000 });
    client = new FleetClient({ url: server.url, apiKey: server.adminKey });
    agent = client.agent({ name: 'doubler', capabilities: ['double', 'results'], concurrency: 50 });
    await agent.work(async (task) => {
      const payload = task.payload as { n?: number; size?: number; fail?: boolean };
      if (payload.fail) throw new NonRetryableError('cannot double that');
      if (payload.size !== undefined) return { text: 'x'.repeat(payload.size) };
      return { doubled: payload.n! * 2 };
    });
  });
  after(async () => {
    await agent?.stop();
    await server?.stop();
  });

  it('carries the result in task.completed events, and says resultTruncated beyond the limit', async () => {
    const events: StreamEvent[] = [];
    const sub = await client.subscribe(['queue:results'], (e) => events.push(e));
    try {
      const small = (await client.submit({ type: 'results', payload: { size: 10 }, requires: ['results'] })).task;
      const large = (await client.submit({ type: 'results', payload: { size: 500 }, requires: ['results'] })).task;
      await eventually(() => events.filter((e) => e.name === 'task.completed').length === 2, 20_000, 'both completions');
      const completed = (id: number) => events.find((e) => e.name === 'task.completed' && e.data.task.id === id)!.data as { result?: unknown; resultTruncated?: boolean };
      assert.deepEqual(completed(small.id), { ...completed(small.id), result: { text: 'x'.repeat(10) } });
      assert.equal(completed(small.id).resultTruncated, undefined);
      assert.equal(completed(large.id).result, undefined, 'over 200 bytes: left out');
      assert.equal(completed(large.id).resultTruncated, true);
      assert.equal(((await client.get(large.id)).result as { text: string }).text.length, 500, 'the task keeps it whole');
    } finally {
      sub.close();
    }
  });

  it('answers GET ?waitMs as soon as the task ends, or at the end of the wait with the task as it is', async () => {
    const api = server.api;
    const idle = await api.registerAgent(['waited']);
    const task = await api.submit({ type: 'waited' });
    const started = Date.now();
    const waiting = api.get(`/v1/tasks/${task.id}?waitMs=15000`);
    await new Promise((r) => setTimeout(r, 200));
    await api.claim(idle.id);
    await api.post(`/v1/tasks/${task.id}/complete`, { agentId: idle.id, result: { ok: 1 } });
    const answer = await waiting;
    assert.equal(answer.status, 200);
    assert.deepEqual([answer.body.status, answer.body.result], ['completed', { ok: 1 }]);
    assert.ok(Date.now() - started < 10_000, `answered after ${Date.now() - started} ms, not at the wait's end`);

    const again = await api.get(`/v1/tasks/${task.id}?waitMs=15000`);
    assert.equal(again.body.status, 'completed', 'an ended task answers at once');

    const queued = await api.submit({ type: 'waited-nobody' });
    const before = Date.now();
    const timedOut = await api.get(`/v1/tasks/${queued.id}?waitMs=300`);
    assert.equal(timedOut.status, 200);
    assert.equal(timedOut.body.status, 'queued');
    assert.ok(Date.now() - before >= 250, 'waited for its waitMs');

    const cancelWait = api.get(`/v1/tasks/${queued.id}?waitMs=15000`);
    await new Promise((r) => setTimeout(r, 100));
    await api.delete(`/v1/tasks/${queued.id}?reason=enough`);
    assert.equal((await cancelWait).body.status, 'cancelled');
  });

  it('stops the wait of a client that hangs up', async () => {
    const task = await server.api.submit({ type: 'waited-hang-up' });
    const before = server.fleet.taskEnds.waiting;
    const request = httpRequest(`${server.url}/v1/tasks/${task.id}?waitMs=15000`, { headers: { authorization: `Bearer ${server.adminKey}` } });
    request.on('error', () => {});
    try {
      request.end();
      await eventually(() => server.fleet.taskEnds.waiting === before + 1, 5_000, 'the request waits');
    } finally {
      request.destroy();
    }
    await eventually(() => server.fleet.taskEnds.waiting === before, 5_000, 'the wait stopped when its client hung up');
  });

  it('refuses a bad waitMs with a clear error', async () => {
    const task = await server.api.submit({ type: 'waited-bad' });
    for (const [query, status, code] of [
      ['waitMs=20001', 400, 'FLEETD_ERR_VALIDATION'],
      ['waitMs=-1', 400, 'FLEETD_ERR_VALIDATION'],
      ['waitMs=soon', 400, 'FLEETD_ERR_VALIDATION'],
      ['waitMs=1.5', 400, 'FLEETD_ERR_VALIDATION'],
      ['wait=100', 400, 'FLEETD_ERR_VALIDATION'],
    ] as const) {
      const reply = await server.api.get(`/v1/tasks/${task.id}?${query}`);
      assert.equal(reply.status, status, `${query}: ${JSON.stringify(reply.body)}`);
      assert.equal(reply.body.error.code, code, query);
    }
    const started = Date.now();
    const missing = await server.api.get('/v1/tasks/987654?waitMs=15000');
    assert.equal(missing.status, 404, 'no such task: at once');
    assert.ok(Date.now() - started < 10_000);
    assert.equal((await server.api.get(`/v1/tasks/${task.id}`)).body.status, 'queued', 'nothing changed');
  });

  it('runs 1,000 tasks with client.run, each resolving with its own result', async (t) => {
    const started = Date.now();
    const results = await Promise.all(Array.from({ length: 1_000 }, (_, n) => client.run({ type: 'double', payload: { n } }, { timeoutMs: 60_000 })));
    t.diagnostic(`1,000 runs in ${Date.now() - started} ms`);
    assert.deepEqual(
      results,
      Array.from({ length: 1_000 }, (_, n) => ({ doubled: n * 2 })),
    );
  });

  it('throws a typed error carrying the task when it is dead, cancelled, or not done in time', async () => {
    const failed = await client.run({ type: 'double', payload: { fail: true } }).catch((err: unknown) => err);
    assert.ok(failed instanceof TaskFailedError, String(failed));
    assert.equal(failed.task.status, 'dead');
    assert.deepEqual(failed.task.error, { name: 'NonRetryableError', message: 'cannot double that' });

    const waited = (await client.submit({ type: 'nobody-does-this' })).task;
    const late = await client.waitFor(waited.id, { timeoutMs: 300 }).catch((err: unknown) => err);
    assert.ok(late instanceof TaskWaitTimeoutError, String(late));
    assert.equal(late.task.status, 'queued');

    const cancelling = client.waitFor(waited.id, { timeoutMs: 20_000 }).catch((err: unknown) => err);
    await new Promise((r) => setTimeout(r, 100));
    await client.cancel(waited.id, { reason: 'no agent for it' });
    const cancelled = await cancelling;
    assert.ok(cancelled instanceof TaskCancelledError, String(cancelled));
    assert.deepEqual(cancelled.task.error, { code: 'FLEETD_ERR_CANCELLED', message: 'no agent for it' });
  });
});
