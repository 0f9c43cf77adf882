import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import { EventSource } from 'undici';
import { randomBytes } from 'node:crypto';
import { eventually, kill9, newAdminKey, startTestServer, stopAndDrop, type TestServer, within } from './helpers.js';
import { TEST_REDIS_URL } from './cluster/node-process.js';
import { TEST_DATABASE_URL, uniqueSchema } from './store/postgres.js';

interface Received {
  type: string;
  id: string;
  data: any;
}

/** A real EventSource (undici's, as a browser's) on a task's stream, collecting what it receives. */
function watch(server: TestServer, taskId: number, query = '') {
  const received: Received[] = [];
  const source = new EventSource(`${server.url}/v1/tasks/${taskId}/stream?token=${server.adminKey}${query}`);
  let opened = 0;
  source.addEventListener('open', () => opened++);
  for (const type of ['progress', 'log', 'output', 'end']) {
    source.addEventListener(type, (e) => {
      const event = e as MessageEvent;
      received.push({ type, id: event.lastEventId, data: JSON.parse(event.data) });
    });
  }
  const ended = new Promise<Received>((resolve) => source.addEventListener('end', () => resolve(received[received.length - 1])));
  return { source, received, ended, opens: () => opened };
}

describe('a task streamed as Server-Sent Events', () => {
  let server: TestServer;
  let child: ChildProcess | undefined;
  before(async () => {
    server = await startTestServer({ taskOutputMaxBytes: 1_000_000, taskOutputChunkMaxBytes: 65_536 });
    child = spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/streaming-agent.ts'], {
      env: { ...process.env, FLEETD_URL: server.url, FLEETD_API_KEY: server.adminKey, TRANSPORT: 'ws' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await within(once(child.stdout!, 'data'), 60_000, 'the streaming agent to start');
  });
  after(async () => {
    if (child) await kill9(child);
    await server.stop();
  });

  it('replays, then streams live what a real agent process writes, then the result, then closes for good', async () => {
    const task = await server.api.submit({ type: 'stream', payload: { chunks: 60, everyMs: 25 } });
    const live = watch(server, task.id);
    try {
      const end = await live.ended;
      assert.equal(end.id, 'end');
      assert.equal(end.data.task.status, 'completed');
      const text = live.received.filter((r) => r.type === 'output').map((r) => r.data.text).join('');
      assert.equal(text, end.data.task.result.text, 'every chunk, in order, before the result');
      const seqs = live.received.filter((r) => r.type !== 'end').map((r) => Number(r.id));
      assert.deepEqual(seqs, seqs.map((_, i) => seqs[0] + i), 'contiguous sequence numbers: none skipped, none twice');
      assert.equal(seqs[0], 1);
      assert.ok(live.received.filter((r) => r.type === 'output').length > 3, 'output arrived over time, not all at the end');
      const progress = live.received.filter((r) => r.type === 'progress').map((r) => r.data.progress);
      assert.equal(progress[progress.length - 1], 1);
      assert.deepEqual(live.received.filter((r) => r.type === 'log').map((r) => r.data.level), ['info', 'warn']);
      // The stream closed after end; the EventSource's reconnect (Last-Event-ID: end) is answered 204, which stops it.
      await eventually(() => live.source.readyState === EventSource.CLOSED, 10_000, 'the EventSource to stop');
      assert.equal(live.opens(), 1);

      // Later readers get the retained tail replayed, then the end; ?since= starts after a sequence number.
      const replay = watch(server, task.id);
      await replay.ended;
      replay.source.close();
      // Only the latest progress is retained; every log line and chunk is (within the bounds).
      const lastProgress = live.received.filter((r) => r.type === 'progress').at(-1)!.id;
      const retained = live.received.filter((r) => r.type !== 'progress' || r.id === lastProgress);
      assert.deepEqual(replay.received.map((r) => r.id), retained.map((r) => r.id));
      const resumed = watch(server, task.id, `&since=${seqs[seqs.length - 3]}`);
      await resumed.ended;
      resumed.source.close();
      assert.deepEqual(resumed.received.map((r) => r.id), [...seqs.slice(-2).map(String), 'end']);
    } finally {
      live.source.close();
    }
  });

  it('ends the stream of a task cancelled while it runs, with the task as it ended', async () => {
    const task = await server.api.submit({ type: 'stream', payload: { chunks: 2_000, everyMs: 20 } });
    const live = watch(server, task.id);
    try {
      await eventually(() => live.received.some((r) => r.type === 'output'), 10_000, 'the first output');
      assert.equal((await server.api.delete(`/v1/tasks/${task.id}`)).status, 200);
      const end = await live.ended;
      assert.equal(end.data.task.status, 'cancelled');
    } finally {
      live.source.close();
    }
  });

  it('refuses what it cannot stream with a JSON error before any event', async () => {
    const missing = await fetch(`${server.url}/v1/tasks/999999/stream`, { headers: { authorization: `Bearer ${server.adminKey}` } });
    assert.equal(missing.status, 404);
    assert.equal((await missing.json()).error.code, 'FLEETD_ERR_NOT_FOUND');
    const task = await server.api.submit({ type: 'nobody-takes-this' });
    const bad = await fetch(`${server.url}/v1/tasks/${task.id}/stream`, { headers: { authorization: `Bearer ${server.adminKey}`, 'last-event-id': 'yesterday' } });
    assert.equal(bad.status, 400);
    assert.equal((await bad.json()).error.details.header, 'last-event-id');
    const anonymous = await fetch(`${server.url}/v1/tasks/${task.id}/stream`);
    assert.equal(anonymous.status, 401);
    const after = await fetch(`${server.url}/v1/tasks/${task.id}/stream`, { headers: { authorization: `Bearer ${server.adminKey}`, 'last-event-id': 'end' } });
    assert.equal(after.status, 204);
  });
});

describe('a task streamed from another node (PostgreSQL and Redis)', () => {
  it('streams to a reader on node B what an agent on node A writes, then the result', async () => {
    const shared = {
      databaseUrl: TEST_DATABASE_URL,
      databaseSchema: uniqueSchema('fleetd_stream'),
      redisUrl: TEST_REDIS_URL,
      redisPrefix: `fleetd-test-${randomBytes(4).toString('hex')}:`,
      adminKey: newAdminKey(),
    };
    const a = await startTestServer(shared);
    let b: TestServer | undefined;
    let child: ChildProcess | undefined;
    try {
      b = await startTestServer(shared);
      child = spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/streaming-agent.ts'], {
        env: { ...process.env, FLEETD_URL: a.url, FLEETD_API_KEY: shared.adminKey, TRANSPORT: 'ws' },
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      await within(once(child.stdout!, 'data'), 60_000, 'the streaming agent to start');
      const task = await b.api.submit({ type: 'stream', payload: { chunks: 80, everyMs: 25 } });
      const reader = watch(b, task.id);
      try {
        // Live, as the agent writes it: a quarter of it is read while the task still runs (B hears A's activity while a stream is open on it).
        await eventually(() => reader.received.filter((r) => r.type === 'output').length >= 20, 10_000, 'the first outputs');
        const running = await b.api.get(`/v1/tasks/${task.id}`);
        assert.equal(running.body.status, 'leased', 'read while the task runs');
        const end = await reader.ended;
        assert.equal(end.data.task.status, 'completed');
        const text = reader.received.filter((r) => r.type === 'output').map((r) => r.data.text).join('');
        assert.equal(text, end.data.task.result.text);
        const seqs = reader.received.filter((r) => r.type !== 'end').map((r) => Number(r.id));
        assert.deepEqual(seqs, seqs.map((_, i) => seqs[0] + i), 'contiguous sequence numbers');
      } finally {
        reader.source.close();
      }
    } finally {
      if (child) await kill9(child);
      await b?.stop();
      await stopAndDrop(a);
    }
  });
});
