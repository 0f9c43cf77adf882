import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { FormatRegistry } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { TASK_STATUSES, type Agent, type Task } from '../src/domain/types.js';
import { TaskSchema, agentJson, iso, minimalTaskJson, pageOf, setTraceparentSource, taskJson, taskJsonText, taskPageText } from '../src/domain/wire.js';
import { AGENT_PROTOCOL_VERSION, ServerMessageSchema, tasksFrame, welcomeFrame } from '../src/protocol/agent-stream.js';

describe('iso', () => {
  it('formats every instant as toISOString does, whatever instants came before it (repeats, and others of the same slot)', () => {
    const base = Date.UTC(2026, 11, 4);
    // Instants near one another, so that repeats and instants 256 ms apart (one slot) are common.
    const instant = fc.oneof(fc.integer({ min: 0, max: 2_000 }).map((d) => base + d), fc.integer({ min: -8.64e15, max: 8.64e15 }));
    fc.assert(
      fc.property(fc.array(instant, { minLength: 1, maxLength: 200 }), (instants) => {
        for (const ms of instants) assert.equal(iso(ms), new Date(ms).toISOString());
      }),
    );
  });

  it('refuses an instant that is not a time, as toISOString does', () => {
    assert.throws(() => iso(Number.NaN), RangeError);
    assert.throws(() => iso(8.64e15 + 1), RangeError);
  });
});

const text = fc.string({ unit: 'binary', maxLength: 20 });
const time = fc.integer({ min: 0, max: 4e12 });
const json = fc.jsonValue({ stringUnit: 'binary', maxDepth: 3 });
/** A task as the store reads it back: its payload the JSON text it was stored as, any JSON at all. */
const storedTask = fc.record(
  {
    id: fc.integer({ min: 1 }),
    namespace: text,
    type: text,
    payloadJson: json.map((v) => JSON.stringify(v)),
    priority: fc.integer(),
    requires: fc.array(text, { maxLength: 3 }),
    status: fc.constantFrom(...TASK_STATUSES),
    idempotencyKey: fc.option(text),
    attempts: fc.nat(),
    maxAttempts: fc.nat(),
    leaseMs: fc.nat(),
    backoffMs: fc.nat(),
    runAt: time,
    createdAt: time,
    updatedAt: time,
    claimedAt: fc.option(time),
    completedAt: fc.option(time),
    agentId: fc.option(text),
    leaseExpiresAt: fc.option(time),
    result: json,
    error: json,
    executionTimeoutMs: fc.option(fc.nat()),
    scheduleTimeoutMs: fc.option(fc.nat()),
    tags: fc.array(text, { maxLength: 3 }),
    metadata: fc.dictionary(text, json, { maxKeys: 3 }),
    parentId: fc.option(fc.integer({ min: 1 })),
    dependencyCount: fc.nat(),
    dependenciesPending: fc.nat(),
    dependencies: fc.array(fc.record({ id: fc.integer({ min: 1 }), status: fc.constantFrom('pending' as const, 'completed' as const, 'dead' as const, 'cancelled' as const), result: json, error: json }), { maxLength: 2 }),
    concurrencyKey: fc.option(text),
    locks: fc.array(text, { maxLength: 2 }),
  },
  { requiredKeys: ['id', 'namespace', 'type', 'payloadJson', 'priority', 'requires', 'status', 'idempotencyKey', 'attempts', 'maxAttempts', 'leaseMs', 'backoffMs', 'runAt', 'createdAt', 'updatedAt', 'claimedAt', 'completedAt', 'agentId', 'leaseExpiresAt', 'result', 'error', 'executionTimeoutMs', 'scheduleTimeoutMs', 'tags', 'metadata', 'parentId', 'dependencyCount', 'dependenciesPending', 'concurrencyKey', 'locks'] },
) as fc.Arbitrary<Task>;

/** What a message sent as an object reads as on the other side. */
const asSent = (message: unknown): unknown => JSON.parse(JSON.stringify(message));

describe('tasks written as text, their payloads spliced in as stored', () => {
  it('reads as the task written as an object would, for any task and any payload (with or without a traceparent)', () => {
    const traced = new Set<number>();
    setTraceparentSource((t) => (traced.has(t.id) ? `00-${'1'.repeat(32)}-${'2'.repeat(16)}-01` : undefined));
    try {
      fc.assert(
        fc.property(storedTask, fc.boolean(), (task, withTrace) => {
          if (withTrace) traced.add(task.id);
          else traced.delete(task.id);
          const text = taskJsonText(task);
          assert.deepEqual(JSON.parse(text), asSent(taskJson(task)));
          // JSON.parse keeps the last of two equal keys: a payload written twice would pass the line above.
          assert.equal(text.indexOf('"payload":'), text.lastIndexOf('"payload":'), text);
        }),
      );
    } finally {
      setTraceparentSource(() => undefined);
    }
  });

  it('writes the tasks and welcome frames as the protocol describes them', () => {
    // TypeBox checks a format only once one is registered: times are written by toISOString.
    if (!FormatRegistry.Has('date-time')) FormatRegistry.Set('date-time', (v) => /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/.test(v));
    const isServerMessage = TypeCompiler.Compile(ServerMessageSchema);
    const agent: Agent = { id: 'a1', namespace: 'default', name: 'one', capabilities: ['x'], labels: { zone: 'a' }, maxConcurrency: 4, status: 'online', createdAt: 1, lastHeartbeatAt: 2 };
    fc.assert(
      fc.property(fc.array(storedTask, { maxLength: 3 }), (tasks) => {
        const pushed = JSON.parse(tasksFrame(tasks));
        assert.deepEqual(pushed, asSent({ type: 'tasks', tasks: tasks.map(taskJson) }));
        assert.ok(isServerMessage.Check(pushed), JSON.stringify([...isServerMessage.Errors(pushed)].slice(0, 2)));
        const welcome = JSON.parse(welcomeFrame(agent, tasks));
        assert.deepEqual(welcome, asSent({ type: 'welcome', protocol: AGENT_PROTOCOL_VERSION, agent: agentJson(agent), leased: tasks.map(taskJson) }));
        assert.ok(isServerMessage.Check(welcome), JSON.stringify([...isServerMessage.Errors(welcome)].slice(0, 2)));
      }),
    );
  });

  it('writes a page of tasks as a list route describes it', () => {
    const isPage = TypeCompiler.Compile(pageOf(TaskSchema));
    fc.assert(
      fc.property(fc.array(storedTask, { maxLength: 3 }), fc.option(fc.string({ minLength: 1, maxLength: 12 }), { nil: null }), (items, nextCursor) => {
        const page = JSON.parse(taskPageText({ items, nextCursor }));
        assert.deepEqual(page, asSent({ items: items.map(taskJson), nextCursor }));
        assert.ok(isPage.Check(page), JSON.stringify([...isPage.Errors(page)].slice(0, 2)));
      }),
    );
  });

  it('keeps a payload as its text, byte for byte, where serializing it again would change it', () => {
    const task = fc.sample(storedTask, { numRuns: 1, seed: 1 })[0];
    // Spaces, 1.0 and an escaped letter: JSON.stringify(JSON.parse(text)) would write none of them.
    const payloadJson = `{ "prompt" : "${'é\u{1F600}'.repeat(5_000)}\\u0041", "n" : 1.0 }`;
    assert.ok(taskJsonText({ ...task, payloadJson }).startsWith(`{"payload":${payloadJson},`));
    assert.ok(tasksFrame([{ ...task, payloadJson }]).includes(`{"payload":${payloadJson},`));
  });

  it('answers a minimal task without its payload, result and error, and with every other field', () => {
    fc.assert(
      fc.property(storedTask, (task) => {
        const { payload: _payload, result: _result, error: _error, ...rest } = taskJson(task);
        assert.deepEqual(minimalTaskJson(task), rest);
      }),
    );
  });
});
