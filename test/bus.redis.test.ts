import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { Redis } from 'ioredis';
import type { EventName } from '../src/bus/bus.js';
import type { TaskSummary } from '../src/domain/types.js';
import { RedisBus } from '../src/bus/redis-bus.js';
import type { RedisSettings } from '../src/redis/connection.js';
import { TEST_REDIS_URL } from './cluster/node-process.js';
import { eventually, startTogether, within } from './helpers.js';

/** Two buses, connected together (neither left open when the other fails to connect). */
const twoBuses = (a: RedisSettings, b: RedisSettings = a) =>
  startTogether({ start: RedisBus.connect(a), stop: (bus) => bus.close() }, { start: RedisBus.connect(b), stop: (bus) => bus.close() });

const agent = { id: 'a1', namespace: 'default', name: 'a', capabilities: [], labels: {}, maxConcurrency: 1, status: 'online' as const, createdAt: 1, lastHeartbeatAt: 1 };

describe('redis bus', { timeout: 20_000 }, () => {
  it('delivers each event once on every node, its own node at once', async () => {
    const settings = { url: TEST_REDIS_URL, prefix: `fleetd-test-${randomBytes(4).toString('hex')}:` };
    const [a, b] = await twoBuses(settings);
    try {
      const onA: string[] = [];
      const onB: string[] = [];
      const relayedOnA: boolean[] = [];
      const relayedOnB: boolean[] = [];
      a.subscribeAll((name) => (onA.push(name), relayedOnA.push(a.relaying)));
      const arrived = new Promise<void>((resolve) =>
        b.subscribeAll((name: EventName) => {
          onB.push(name);
          relayedOnB.push(b.relaying);
          if (name === 'agent.deleted') resolve();
        }),
      );
      a.publish('agent.registered', { agent });
      assert.deepEqual(onA, ['agent.registered'], 'local handlers run synchronously');
      a.publish('tasks.available', { byRequirement: { x: 1 } });
      a.publish('agent.deleted', { agent });
      await within(arrived, 10_000, 'the events on the other node');
      assert.deepEqual(onB, ['agent.registered', 'agent.deleted'], 'wake-ups stay local; the rest crosses');
      assert.deepEqual(onA, ['agent.registered', 'tasks.available', 'agent.deleted'], 'no echo of its own events');
      assert.deepEqual(relayedOnA, [false, false, false], 'A published these');
      assert.deepEqual(relayedOnB, [true, true], 'B relays what A published');
      assert.equal(b.relaying, false, 'only while relaying');
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  it('hands an event a handler publishes to everyone after the event it follows from, on both nodes', async () => {
    const settings = { url: TEST_REDIS_URL, prefix: `fleetd-test-${randomBytes(4).toString('hex')}:` };
    const [a, b] = await twoBuses(settings);
    try {
      // As Fleet says a task's lock taken with its lease: a named handler, before every subscribeAll.
      a.subscribe('agent.registered', () => a.publish('agent.online', { agent }));
      const onA: string[] = [];
      const onB: string[] = [];
      a.subscribeAll((name) => onA.push(name));
      const arrived = new Promise<void>((resolve) =>
        b.subscribeAll((name: EventName) => {
          onB.push(name);
          if (name === 'agent.deleted') resolve();
        }),
      );
      a.publish('agent.registered', { agent });
      assert.deepEqual(onA, ['agent.registered', 'agent.online'], 'handled before the publish returns, after what it follows from');
      a.publish('agent.deleted', { agent });
      await within(arrived, 10_000, 'the events on the other node');
      assert.deepEqual(onB, ['agent.registered', 'agent.online', 'agent.deleted']);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  it("relays a task's created, claimed, extended and activity events and its result only to a node that asks for them", async () => {
    const settings = { url: TEST_REDIS_URL, prefix: `fleetd-test-${randomBytes(4).toString('hex')}:` };
    const [a, b] = await twoBuses(settings);
    try {
      // The bus carries what it is given: the fields the handlers here read are enough.
      const task = { id: 7, namespace: 'default', type: 'life', status: 'completed', agentId: 'a1', claimedAt: 1, completedAt: 2 } as unknown as TaskSummary;
      const onB: [string, unknown][] = [];
      b.subscribeAll((name, event) => onB.push([name, event]));
      const life = () => {
        a.publish('task.created', { task });
        a.publish('task.claimed', { task });
        a.publish('task.extended', { task });
        a.publish('task.activity', { taskId: 7, namespace: 'default', entries: [] });
        a.publish('task.completed', { task, result: { answer: 42 } });
        a.publish('task.failed', { task });
        a.publish('agent.deleted', { agent });
      };
      const heard = async () => {
        await eventually(() => onB.some(([name]) => name === 'agent.deleted'), 10_000, 'the marker on the other node');
        return onB.splice(0);
      };

      life();
      assert.deepEqual(await heard(), [
        ['task.completed', { task, resultTruncated: true }],
        ['task.failed', { task }],
        ['agent.deleted', { agent }],
      ]);

      const giveBack = await b.hearAll();
      life();
      assert.deepEqual(
        (await heard()).map(([name]) => name),
        ['task.created', 'task.claimed', 'task.extended', 'task.activity', 'task.completed', 'task.failed', 'agent.deleted'],
      );
      assert.deepEqual(onB, []);
      life();
      const [, completed] = (await heard()).find(([name]) => name === 'task.completed')!;
      assert.deepEqual(completed, { task, result: { answer: 42 } }, 'the result, while asked for');

      await giveBack();
      life();
      assert.deepEqual((await heard()).map(([name]) => name), ['task.completed', 'task.failed', 'agent.deleted'], 'given back, the lean events again');
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  it('hears every message once and in order while a node moves between hearing all and hearing less', async () => {
    const settings = { url: TEST_REDIS_URL, prefix: `fleetd-test-${randomBytes(4).toString('hex')}:` };
    const [a, b] = await twoBuses(settings);
    try {
      const gaps: number[] = [];
      b.onRelayGap((_node, missed) => gaps.push(missed));
      const onB: string[] = [];
      b.subscribe('agent.stale', (e) => onB.push(e.agentId));
      // A publishes a few events a tick while B asks for every event and gives the demand back, over and over.
      const sent: string[] = [];
      let publishing = true;
      const publishing$ = (async () => {
        for (let i = 0; publishing; i++) {
          for (let j = 0; j < 3; j++) {
            const id = `${i}.${j}`;
            sent.push(id);
            a.publish('agent.stale', { agentId: id });
          }
          await new Promise((resolve) => setImmediate(resolve));
        }
      })();
      for (let k = 0; k < 10; k++) {
        const giveBack = await b.hearAll();
        await giveBack();
      }
      publishing = false;
      await publishing$;
      await eventually(() => onB.length >= sent.length, 10_000, 'every event on the other node');
      assert.equal(onB.length, sent.length, 'no message handled twice');
      assert.deepEqual(onB, sent);
      assert.deepEqual(gaps, [], 'no message missed');
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  it('hears each message once while hearing all, and a node of a version before the split, which publishes on events only', async () => {
    const settings = { url: TEST_REDIS_URL, prefix: `fleetd-test-${randomBytes(4).toString('hex')}:` };
    const [a, b] = await twoBuses(settings);
    const older = new Redis(TEST_REDIS_URL, { lazyConnect: true });
    try {
      await older.connect();
      const onB: string[] = [];
      b.subscribe('agent.stale', (e) => onB.push(e.agentId));
      const giveBack = await b.hearAll();
      // As a node of the earlier version sends a tick's events: in full, numbered, on `events` alone.
      const fromOlder = (n: number, agentId: string) => older.publish(`${settings.prefix}events`, JSON.stringify({ node: 'older-node', n, events: [['agent.stale', { agentId }]] }));
      await fromOlder(1, 'older-1');
      for (let i = 0; i < 20; i++) {
        a.publish('agent.stale', { agentId: `a-${i}` });
        await new Promise((resolve) => setImmediate(resolve));
      }
      await fromOlder(2, 'older-2');
      a.publish('agent.stale', { agentId: 'marker' });
      await eventually(() => onB.includes('marker') && onB.includes('older-2'), 5_000, 'the marker and the older node on the other node');
      // Messages reach B in the order Redis took them: once the marker's second copy is in, every earlier one is.
      a.publish('agent.stale', { agentId: 'after' });
      await eventually(() => onB.includes('after'), 5_000, 'a last message');
      assert.deepEqual(
        onB.filter((id) => id.startsWith('a-')),
        Array.from({ length: 20 }, (_, i) => `a-${i}`),
        'each of A\'s messages once, though it came on both channels',
      );
      assert.deepEqual(onB.filter((id) => id.startsWith('older-')), ['older-1', 'older-2'], 'the older node heard while hearing all');
      await giveBack();
      await fromOlder(3, 'older-3');
      await eventually(() => onB.includes('older-3'), 5_000, 'the older node, given back');
    } finally {
      older.disconnect();
      await Promise.all([a.close(), b.close()]);
    }
  });

  it('keeps clusters with different prefixes apart', async () => {
    const [a, b] = await twoBuses(
      { url: TEST_REDIS_URL, prefix: `fleetd-test-${randomBytes(4).toString('hex')}:` },
      { url: TEST_REDIS_URL, prefix: `fleetd-test-${randomBytes(4).toString('hex')}:` },
    );
    let c: RedisBus | undefined;
    try {
      c = await RedisBus.connect({ url: TEST_REDIS_URL, prefix: (a as unknown as { channel: string }).channel.replace(/events$/, '') });
      const third = c;
      const onB: string[] = [];
      b.subscribeAll((name) => onB.push(name));
      const onC = new Promise<string>((resolve) => third.subscribe('agent.stale', (e) => resolve(e.agentId)));
      a.publish('agent.stale', { agentId: 'z' });
      assert.equal(await within(onC, 10_000, 'the event on the node of the same prefix'), 'z');
      assert.deepEqual(onB, []);
    } finally {
      await Promise.all([a.close(), b.close(), c?.close()]);
    }
  });
});
