import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import type { EventName } from '../src/bus/bus.js';
import { RedisBus } from '../src/bus/redis-bus.js';
import type { RedisSettings } from '../src/redis/connection.js';
import { TEST_REDIS_URL } from './cluster/node-process.js';
import { startTogether, within } from './helpers.js';

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
