import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import { drivers, eventually, kill9, startTestServer, stopAndDrop, tempDir, type TestServer, within } from './helpers.js';
import { assertWireEvents, connect, connectAgent } from './ws-helpers.js';

const limits = { taskLogMaxLines: 5, taskOutputMaxBytes: 64, taskLogLineMaxBytes: 100, taskOutputChunkMaxBytes: 32 };

for (const [driver, store] of Object.entries(drivers)) {
  describe(`task progress, logs and output (${driver})`, () => {
    let server: TestServer;
    before(async () => {
      server = await startTestServer({ ...store(), ...limits });
    });
    after(async () => {
      if (server) await stopAndDrop(server);
    });

    async function leasedTask(type: string) {
      const agent = await server.api.registerAgent([type]);
      const task = await server.api.submit({ type, payload: {} });
      const [claimed] = await server.api.as(agent.token).claim(agent.id);
      assert.equal(claimed.id, task.id);
      return { agent, id: task.id as number, as: server.api.as(agent.token) };
    }

    it('keeps what the lease holder reports over HTTP and answers it at GET /v1/tasks/:id/logs, bounded', async () => {
      const { agent, id, as } = await leasedTask('report-http');
      const progress = await as.post(`/v1/tasks/${id}/progress`, { agentId: agent.id, progress: 0.4, message: 'parsed 40 pages' });
      assert.equal(progress.status, 200);
      assert.deepEqual(progress.body, { taskId: id, lastSeq: 1 });
      const logs = await as.post(`/v1/tasks/${id}/logs`, { agentId: agent.id, lines: [{ message: 'one' }, { level: 'error', message: 'two' }] });
      assert.deepEqual(logs.body, { taskId: id, lastSeq: 3 });
      assert.equal((await as.post(`/v1/tasks/${id}/output`, { agentId: agent.id, text: 'Hello, ' })).status, 200);
      assert.equal((await as.post(`/v1/tasks/${id}/output`, { agentId: agent.id, text: 'wörld' })).status, 200);

      const read = await server.api.get(`/v1/tasks/${id}/logs`);
      assert.equal(read.status, 200);
      assert.equal(read.body.status, 'leased');
      assert.deepEqual(read.body.progress.progress, 0.4);
      assert.deepEqual(
        read.body.entries.map((e: any) => [e.seq, e.kind, e.message ?? e.text, e.level]),
        [
          [1, 'progress', 'parsed 40 pages', undefined],
          [2, 'log', 'one', 'info'],
          [3, 'log', 'two', 'error'],
          [4, 'output', 'Hello, ', undefined],
          [5, 'output', 'wörld', undefined],
        ],
      );
      assert.equal(read.body.lastSeq, 5);
      assert.equal(read.body.outputBytes, 13, 'ö is two bytes');
      assert.equal(new Date(read.body.entries[0].at).toISOString(), read.body.entries[0].at);
      const since = await server.api.get(`/v1/tasks/${id}/logs?since=3&limit=1`);
      assert.deepEqual(since.body.entries.map((e: any) => e.seq), [4]);
      assert.equal(since.body.more, true);

      // Past the bounds (5 lines, 64 bytes) the oldest go; the totals still count them.
      await as.post(`/v1/tasks/${id}/logs`, { agentId: agent.id, lines: Array.from({ length: 7 }, (_, i) => ({ message: `line ${i}` })) });
      for (let i = 0; i < 4; i++) await as.post(`/v1/tasks/${id}/output`, { agentId: agent.id, text: 'x'.repeat(20) });
      const bounded = (await server.api.get(`/v1/tasks/${id}/logs`)).body;
      const lines = bounded.entries.filter((e: any) => e.kind === 'log').map((e: any) => e.message);
      assert.deepEqual(lines, ['line 2', 'line 3', 'line 4', 'line 5', 'line 6']);
      const kept = bounded.entries.filter((e: any) => e.kind === 'output').reduce((n: number, e: any) => n + Buffer.byteLength(e.text), 0);
      assert.ok(kept <= 64, `${kept} output bytes kept`);
      assert.equal(kept, 60, 'the newest whole chunks within the bound');
      assert.equal(bounded.logLines, 9);
      assert.equal(bounded.outputBytes, 93);
    });

    it('refuses bad reports with a clear error and keeps nothing of them', async () => {
      const { agent, id, as } = await leasedTask('report-bad');
      const other = await server.api.registerAgent(['report-bad']);
      const before = (await server.api.get(`/v1/tasks/${id}/logs`)).body;
      const cases: [string, string, unknown, number, string, (body: any) => void][] = [
        ['progress above 1', 'progress', { agentId: agent.id, progress: 1.5 }, 400, 'FLEETD_ERR_VALIDATION', () => {}],
        ['progress below 0', 'progress', { agentId: agent.id, progress: -0.1 }, 400, 'FLEETD_ERR_VALIDATION', () => {}],
        ['progress as text', 'progress', { agentId: agent.id, progress: 'half' }, 400, 'FLEETD_ERR_VALIDATION', () => {}],
        ['no lines', 'logs', { agentId: agent.id, lines: [] }, 400, 'FLEETD_ERR_VALIDATION', () => {}],
        ['unknown level', 'logs', { agentId: agent.id, lines: [{ level: 'loud', message: 'x' }] }, 400, 'FLEETD_ERR_VALIDATION', () => {}],
        ['empty output', 'output', { agentId: agent.id, text: '' }, 400, 'FLEETD_ERR_VALIDATION', () => {}],
        [
          'a line over the limit',
          'logs',
          { agentId: agent.id, lines: [{ message: 'fine' }, { message: 'y'.repeat(101) }] },
          413,
          'FLEETD_ERR_ENTRY_TOO_LARGE',
          (b) => assert.deepEqual(b.error.details, { field: 'lines[1].message', bytes: 101, limit: 100 }),
        ],
        [
          'a chunk over the limit',
          'output',
          { agentId: agent.id, text: 'é'.repeat(17) },
          413,
          'FLEETD_ERR_ENTRY_TOO_LARGE',
          (b) => {
            assert.equal(b.error.details.limit, 32);
            assert.match(b.error.message, /FLEETD_TASK_OUTPUT_CHUNK_MAX_BYTES/);
          },
        ],
      ];
      for (const [what, route, body, status, code, check] of cases) {
        const res = await as.post(`/v1/tasks/${id}/${route}`, body);
        assert.equal(res.status, status, `${what}: ${JSON.stringify(res.body)}`);
        assert.equal(res.body.error.code, code, what);
        check(res.body);
      }
      // Another agent, with its own token: it does not hold the lease.
      const stranger = await server.api.as(other.token).post(`/v1/tasks/${id}/logs`, { agentId: other.id, lines: [{ message: 'mine?' }] });
      assert.equal(stranger.status, 409);
      assert.equal(stranger.body.error.code, 'FLEETD_ERR_LEASE_LOST');
      assert.equal(stranger.body.error.details.holder, agent.id);
      // Another agent's token speaking for the holder.
      const impostor = await server.api.as(other.token).post(`/v1/tasks/${id}/output`, { agentId: agent.id, text: 'hi' });
      assert.equal(impostor.status, 403);
      assert.equal(impostor.body.error.code, 'FLEETD_ERR_FORBIDDEN');
      const missing = await as.post('/v1/tasks/999999/progress', { agentId: agent.id, progress: 0.5 });
      assert.equal(missing.status, 404);
      assert.deepEqual((await server.api.get(`/v1/tasks/${id}/logs`)).body, before, 'nothing was kept');
      assert.equal((await server.api.get('/v1/tasks/999999/logs')).status, 404);
      assert.equal((await server.api.get(`/v1/tasks/${id}/logs?limit=0`)).status, 400);

      // Finished, or cancelled: 409 with the state.
      await as.post(`/v1/tasks/${id}/complete`, { agentId: agent.id, result: 1 });
      const late = await as.post(`/v1/tasks/${id}/output`, { agentId: agent.id, text: 'late' });
      assert.equal(late.status, 409);
      assert.equal(late.body.error.code, 'FLEETD_ERR_TASK_STATE');
      assert.equal(late.body.error.details.status, 'completed');
      const second = await leasedTask('report-bad-2');
      assert.equal((await server.api.delete(`/v1/tasks/${second.id}`)).status, 200);
      const cancelled = await second.as.post(`/v1/tasks/${second.id}/progress`, { agentId: second.agent.id, progress: 0.9 });
      assert.equal(cancelled.status, 409);
      assert.deepEqual([cancelled.body.error.code, cancelled.body.error.details.status], ['FLEETD_ERR_TASK_STATE', 'cancelled']);
    });

    it('takes the same reports as socket messages, acks them and tells observers of task:<id>', async () => {
      const { agent, id } = await leasedTask('report-ws');
      const observer = await connect(`${server.url}/v1/events`, { authorization: `Bearer ${server.adminKey}` });
      const { peer } = await connectAgent(server.url, agent);
      try {
        observer.send({ type: 'subscribe', topics: [`task:${id}`] });
        await observer.next('subscribed');
        peer.send({ type: 'progress', id, progress: 0.5, message: 'half', ref: 1 });
        peer.send({ type: 'logs', id, lines: [{ message: 'over the socket' }], ref: 2 });
        peer.send({ type: 'output', id, text: 'token', ref: 3 });
        peer.send({ type: 'progress', id, progress: 2, ref: 4 });
        peer.send({ type: 'output', id, text: 'z'.repeat(33), ref: 5 });
        assert.deepEqual(await peer.next('ack', (m) => m.ref === 1), { type: 'ack', ref: 1, id, lastSeq: 1 });
        assert.equal((await peer.next('ack', (m) => m.ref === 3)).lastSeq, 3);
        assert.equal((await peer.next('error', (m) => m.error.details.ref === 4)).error.code, 'FLEETD_ERR_VALIDATION');
        assert.equal((await peer.next('error', (m) => m.ref === 5)).error.code, 'FLEETD_ERR_ENTRY_TOO_LARGE');
        const seen: any[] = [];
        await eventually(
          async () => {
            const batch = await observer.next('events');
            seen.push(...batch.events);
            return seen.flatMap((e) => e.data.entries ?? []).length >= 3;
          },
          10_000,
          'three entries on task:<id>',
        );
        assertWireEvents(seen);
        const activity = seen.filter((e) => e.name === 'task.activity');
        assert.ok(activity.every((e) => e.topic === `task:${id}` && e.data.taskId === id));
        assert.deepEqual(activity.flatMap((e) => e.data.entries.map((x: any) => x.seq)), [1, 2, 3]);
      } finally {
        observer.socket.close();
        peer.socket.close();
      }
    });
  });
}

describe('task activity outlives the process (sqlite)', () => {
  it('answers the tail after a restart on the same data', async () => {
    const dataDir = tempDir();
    let server = await startTestServer({ dataDir });
    try {
      const agent = await server.api.registerAgent(['keep-logs']);
      const task = await server.api.submit({ type: 'keep-logs' });
      await server.api.as(agent.token).claim(agent.id);
      await server.api.as(agent.token).post(`/v1/tasks/${task.id}/logs`, { agentId: agent.id, lines: [{ message: 'before the restart' }] });
      await server.stop({ keepData: true });
      server = await startTestServer({ dataDir });
      const read = await server.api.get(`/v1/tasks/${task.id}/logs`);
      assert.deepEqual(read.body.entries.map((e: any) => e.message), ['before the restart']);
    } finally {
      await server.stop();
    }
  });
});

describe('an SDK agent process reporting as it works', () => {
  let server: TestServer;
  const children: ChildProcess[] = [];
  before(async () => {
    server = await startTestServer();
  });
  after(async () => {
    for (const child of children) await kill9(child);
    await server.stop();
  });

  async function startAgent(transport: 'ws' | 'poll'): Promise<ChildProcess> {
    const child = spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/streaming-agent.ts'], {
      env: { ...process.env, FLEETD_URL: server.url, FLEETD_API_KEY: server.adminKey, TRANSPORT: transport },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    children.push(child);
    await within(once(child.stdout!, 'data'), 60_000, 'the streaming agent to start');
    return child;
  }

  for (const transport of ['ws', 'poll'] as const) {
    it(`batches ctx.output per tick and keeps every chunk in order before the completion (${transport})`, async () => {
      const child = await startAgent(transport);
      try {
        const task = await server.api.submit({ type: 'stream', payload: { chunks: 300, everyMs: 0 } });
        await eventually(async () => (await server.api.get(`/v1/tasks/${task.id}`)).body.status === 'completed', 30_000, 'the task completed');
        const done = (await server.api.get(`/v1/tasks/${task.id}`)).body;
        const read = (await server.api.get(`/v1/tasks/${task.id}/logs?limit=5000`)).body;
        const text = read.entries.filter((e: any) => e.kind === 'output').map((e: any) => e.text).join('');
        assert.equal(text, done.result.text, 'the output, whole and in order');
        assert.ok(read.entries.length < 100, `300 chunks in one tick went out as few entries, not ${read.entries.length}`);
        const logs = read.entries.filter((e: any) => e.kind === 'log').map((e: any) => [e.level, e.message]);
        assert.deepEqual(logs, [['info', 'starting 300 chunks'], ['warn', 'done']]);
        assert.deepEqual([read.progress.progress, read.progress.message], [1, '300 of 300']);
        assert.equal(read.outputBytes, Buffer.byteLength(done.result.text));
      } finally {
        await kill9(child);
      }
    });
  }
});
