import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import fc from 'fast-check';
import WebSocket from 'ws';
import { AgentMessageSchema } from '../src/protocol/agent-stream.js';
import { ObserverMessageSchema } from '../src/protocol/events.js';
import { arbitraryFor, hostileString, toJsonBytes, type Schema } from './fuzz/hostile.js';
import { timerMoved } from './fuzz/timers.js';
import { startTestServer } from './helpers.js';

/**
 * The WebSocket side of the fuzzer: frames generated from the agent-stream and observer message
 * schemas and made hostile, malformed JSON, binary frames, invalid UTF-8, deep and oversized
 * messages. Every refusal is a JSON error message (or a close with a documented code), a refused
 * message changes nothing, and the gateway goes on serving. Seeded like test/api.fuzz.test.ts
 * (FLEETD_FUZZ_RUNS, FLEETD_FUZZ_SEED).
 */
const RUNS = Number(process.env.FLEETD_FUZZ_RUNS ?? 20) * 5;
const SEED = Number(process.env.FLEETD_FUZZ_SEED ?? 8);

// 1007 invalid UTF-8, 1008 policy (a message that could not be read), 1009 too big.
const REFUSAL_CLOSE_CODES = new Set([1007, 1008, 1009]);

const server = await startTestServer({ agentStaleMs: 600_000, agentOfflineMs: 1_200_000 });
const api = server.api;
after(() => server.stop());

// The agent holds every task there is, on long leases and backoffs, so that nothing moves on its
// own while the frames arrive (a fuzzed extend may still shorten a lease: see timerMoved).
const agent = await api.registerAgent(['wsfuzz'], { maxConcurrency: 10 });
for (let i = 0; i < 3; i++) await api.submit({ type: 'wsfuzz', payload: { i }, leaseMs: 3_600_000, backoffMs: 86_400_000 });
const held = await api.claim(agent.id, 3);

/** A socket whose messages queue up until read, and whose close is recorded. */
class Session {
  readonly inbox: any[] = [];
  closed: number | undefined;
  private wake = () => {};
  private constructor(readonly socket: WebSocket) {
    socket.on('message', (data) => {
      this.inbox.push(JSON.parse(data.toString()));
      this.wake();
    });
    socket.on('close', (code) => {
      this.closed = code;
      this.wake();
    });
    socket.on('error', () => {});
  }

  static async open(path: string, headers: Record<string, string> = {}): Promise<Session> {
    const socket = new WebSocket(server.url.replace(/^http/, 'ws') + path, { headers });
    // Listening from the start: the welcome may come in the same read as the upgrade's answer, and
    // ws emits it before a listener added after 'open' (on a later promise job) would hear it.
    const session = new Session(socket);
    await new Promise((resolve, reject) => socket.once('open', resolve).once('error', reject));
    return session;
  }

  /** Messages up to and including the first that `last` picks, or up to the close. */
  async until(last: (m: any) => boolean, timeoutMs = 10_000): Promise<any[]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.inbox.findIndex(last);
      if (i >= 0) return this.inbox.splice(0, i + 1);
      if (this.closed !== undefined) return this.inbox.splice(0);
      assert.ok(Date.now() < deadline, 'the server did not answer the sentinel message');
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        setTimeout(resolve, 100);
      });
    }
  }
}

function assertErrorMessage(m: any, what: string): void {
  assert.equal(typeof m?.error?.code, 'string', `${what}: error message without a code: ${JSON.stringify(m).slice(0, 300)}`);
  assert.match(m.error.code, /^FLEETD_ERR_[A-Z_]+$/);
  assert.equal(typeof m.error.message, 'string');
  assert.ok(m.error.details !== null && typeof m.error.details === 'object');
}

/** What a frame could change: the tasks and the agent (less its heartbeat time, which the sentinel moves). */
async function agentState(): Promise<{ tasks: any[]; record: unknown }> {
  const exported = String((await api.get('/v1/tasks/export')).body ?? '');
  const { lastHeartbeatAt: _moved, ...record } = (await api.get(`/v1/agents/${agent.id}`)).body;
  return { tasks: exported.split('\n').filter(Boolean).map((line) => JSON.parse(line)), record };
}

function assertUnchanged(before: Awaited<ReturnType<typeof agentState>>, after: Awaited<ReturnType<typeof agentState>>, what: string): void {
  const now = Date.now();
  assert.deepEqual(after.record, before.record, `${what} changed the agent`);
  assert.deepEqual(after.tasks.map((t) => t.id), before.tasks.map((t) => t.id), `${what} changed which tasks exist`);
  before.tasks.forEach((b, i) => {
    if (!timerMoved(b, after.tasks[i], now)) assert.deepEqual(after.tasks[i], b, `${what} changed task ${b.id}`);
  });
}

const malformed = ['', '{', 'null', '[]', '"credit"', '{"type":"credit","add":1', '{"type":"complete","id":1e400}', '{"__proto__":{"type":"heartbeat"}}', '{"type":"x"}'];

type Frame = { data: Buffer; binary: boolean };
const frames = (schema: Schema): fc.Arbitrary<Frame> =>
  fc.oneof(
    { weight: 6, arbitrary: arbitraryFor(schema).map((v) => ({ data: toJsonBytes(v), binary: false })) },
    { weight: 1, arbitrary: fc.constantFrom(...malformed).map((t) => ({ data: Buffer.from(t), binary: false })) },
    { weight: 1, arbitrary: hostileString.map((t) => ({ data: Buffer.from(t), binary: true })) },
    { weight: 1, arbitrary: fc.constantFrom([0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xff]).map((b) => ({ data: Buffer.from(b), binary: false })) },
  );

const describeFrame = (f: Frame) => `${f.binary ? 'binary' : 'text'} frame ${f.data.subarray(0, 200).toString()}`;

describe('WebSocket fuzzing', () => {
  it('the agent stream refuses hostile frames with an error, changes nothing for them, and goes on serving', async () => {
    const path = `/v1/agents/${agent.id}/stream`;
    const auth = { authorization: `Bearer ${agent.token}` };
    let session = await Session.open(path, auth);
    await session.until((m) => m.type === 'welcome');
    let sentinel = 0;

    const sendFrame = async (frame: Frame) => {
      const before = await agentState();
      session.socket.send(frame.data, { binary: frame.binary });
      const ref = `sentinel-${++sentinel}`;
      if (session.socket.readyState === WebSocket.OPEN) session.socket.send(JSON.stringify({ type: 'heartbeat', ref }));
      const replies = await session.until((m) => m.type === 'ack' && m.ref === ref);
      const answers = replies.filter((m) => m.ref !== ref);
      for (const m of answers) if (m.type === 'error') assertErrorMessage(m, describeFrame(frame));
      if (session.closed !== undefined) {
        assert.ok(REFUSAL_CLOSE_CODES.has(session.closed), `${describeFrame(frame)}: closed with ${session.closed}`);
        session = await Session.open(path, auth);
        await session.until((m) => m.type === 'welcome');
      }
      // Acknowledged, or tasks pushed on a credit it granted: the frame was taken, and may change things.
      if (!answers.some((m) => m.type === 'ack' || m.type === 'tasks')) assertUnchanged(before, await agentState(), `${describeFrame(frame)}, refused,`);
    };

    const deep = '{"a":['.repeat(5_000) + ']}'.repeat(5_000);
    for (const data of [
      Buffer.alloc(2 * 1024 * 1024, 'a'),
      `{"type":"complete","id":${held[0].id},"result":${deep},"ref":1}`,
      // An invalid message's ref was once echoed as it came: serialising it overflowed the stack and killed the process.
      `{"type":"nope","ref":${deep}}`,
    ]) {
      await sendFrame({ data: Buffer.from(data), binary: false });
    }
    await fc.assert(fc.asyncProperty(frames(AgentMessageSchema as Schema), sendFrame), { seed: SEED, numRuns: RUNS, endOnFailure: true });

    // Still serving: a task submitted now is pushed on credit and completes.
    session.socket.close();
    const fresh = await Session.open(path, auth);
    await fresh.until((m) => m.type === 'welcome');
    const task = await api.submit({ type: 'wsfuzz', payload: { last: true } });
    fresh.socket.send(JSON.stringify({ type: 'credit', add: 100 }));
    await fresh.until((m) => m.type === 'tasks' && m.tasks.some((t: any) => t.id === task.id));
    fresh.socket.send(JSON.stringify({ type: 'complete', id: task.id, ref: 'last' }));
    const [ack] = (await fresh.until((m) => m.ref === 'last')).slice(-1);
    assert.equal(ack.type, 'ack');
    assert.equal((await api.get(`/v1/tasks/${task.id}`)).body.status, 'completed');
    fresh.socket.close();
  });

  it('the observer stream refuses hostile frames with an error and goes on serving', async () => {
    const admin = { authorization: `Bearer ${server.adminKey}` };
    let session = await Session.open('/v1/events', admin);
    let sentinel = 0;
    const sendFrame = async (frame: Frame) => {
      session.socket.send(frame.data, { binary: frame.binary });
      // The sentinel: a subscription to a topic of its own, answered after whatever the frame caused.
      const topic = `task:${++sentinel}`;
      if (session.socket.readyState === WebSocket.OPEN) session.socket.send(JSON.stringify({ type: 'subscribe', topics: [topic] }));
      const replies = await session.until((m) => m.type === 'subscribed' && m.topics.includes(topic));
      for (const m of replies) if (m.type === 'error') assertErrorMessage(m, describeFrame(frame));
      if (session.closed !== undefined) {
        assert.ok(REFUSAL_CLOSE_CODES.has(session.closed), `${describeFrame(frame)}: closed with ${session.closed}`);
        session = await Session.open('/v1/events', admin);
      } else session.socket.send(JSON.stringify({ type: 'unsubscribe', topics: [topic] }));
    };
    await sendFrame({ data: Buffer.alloc(2 * 1024 * 1024, 'a'), binary: false });
    await fc.assert(fc.asyncProperty(frames(ObserverMessageSchema as Schema), sendFrame), { seed: SEED, numRuns: RUNS, endOnFailure: true });

    // Still serving: a subscriber sees a task created now.
    session.socket.send(JSON.stringify({ type: 'subscribe', topics: ['queue:wsfuzz-last'] }));
    await session.until((m) => m.type === 'subscribed' && m.topics.includes('queue:wsfuzz-last'));
    const task = await api.submit({ type: 'wsfuzz-last' });
    await session.until((m) => m.type === 'events' && m.events.some((e: any) => e.name === 'task.created' && e.data.task.id === task.id));
    session.socket.close();
    assert.equal((await api.get('/healthz')).status, 200);
  });
});
