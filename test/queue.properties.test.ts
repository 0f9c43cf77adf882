import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { LocalBus } from '../src/bus/local-bus.js';
import { resolveConfig } from '../src/config.js';
import { Fleet } from '../src/core/fleet.js';
import { FleetError } from '../src/core/errors.js';
import type { Task } from '../src/core/types.js';
import { SqliteStore } from '../src/store/sqlite/sqlite-store.js';

/**
 * Random interleavings of submit, claim, complete, fail, extend, expire and cancel, run on the real
 * domain and SQLite store with a clock the test moves. After every step the invariants of the
 * design must hold: nothing acknowledged is lost, no task is leased twice, claims follow priority
 * then age, and the counters equal a recount.
 */
const op = fc.oneof(
  fc.record({ kind: fc.constant('submit' as const), priority: fc.integer({ min: 0, max: 3 }), type: fc.constantFrom('a', 'b'), delay: fc.constantFrom(0, 0, 500) }),
  fc.record({ kind: fc.constant('claim' as const), agent: fc.integer({ min: 0, max: 2 }), max: fc.integer({ min: 1, max: 4 }) }),
  fc.record({ kind: fc.constant('complete' as const), pick: fc.nat() }),
  fc.record({ kind: fc.constant('fail' as const), pick: fc.nat(), retryable: fc.boolean() }),
  fc.record({ kind: fc.constant('extend' as const), pick: fc.nat() }),
  fc.record({ kind: fc.constant('cancel' as const), pick: fc.nat() }),
  fc.record({ kind: fc.constant('wrongAgent' as const), pick: fc.nat() }),
  fc.record({ kind: fc.constant('advance' as const), ms: fc.constantFrom(100, 600, 2_000) }),
);

// Agent 0 does a and b, agent 1 only a, agent 2 only b.
const capabilities = [['a', 'b'], ['a'], ['b']];

type Op = typeof op extends fc.Arbitrary<infer T> ? T : never;

async function runScenario(ops: Op[]) {
  let clock = 1_000_000;
  const store = new SqliteStore({ dataDir: ':memory:' });
  const config = resolveConfig({ taskBackoffMs: 200, taskBackoffMaxMs: 1_000, taskLeaseMs: 1_000, agentStaleMs: 10 ** 9, agentOfflineMs: 2 * 10 ** 9 }, {});
  const silent = { info() {}, warn() {}, error() {} };
  const fleet = new Fleet({ store, bus: new LocalBus(), config, log: silent, now: () => clock });
  try {
    const agents: string[] = [];
    for (const caps of capabilities) agents.push((await fleet.agents.register({ name: 'p', capabilities: caps, maxConcurrency: 3 })).agent.id);
    const acknowledged = new Set<number>();
    const leasedBy = new Map<number, string>();

    const pickLeased = (n: number): [number, string] | undefined => {
      const entries = [...leasedBy];
      return entries.length === 0 ? undefined : entries[n % entries.length];
    };
    const allTasks = async (): Promise<Task[]> => {
      const out: Task[] = [];
      for await (const chunk of fleet.tasks.export({})) out.push(...chunk);
      return out;
    };

    for (const o of ops) {
      switch (o.kind) {
        case 'submit': {
          const { task } = await fleet.tasks.submit({ type: o.type, priority: o.priority, runAt: clock + o.delay });
          acknowledged.add(task.id);
          break;
        }
        case 'claim': {
          const agentId = agents[o.agent];
          const before = await allTasks();
          const claimed = await fleet.tasks.claim({ agentId, max: o.max, waitMs: 0 });
          for (const t of claimed) {
            assert.ok(!leasedBy.has(t.id), `task ${t.id} handed out while still leased`);
            assert.ok(capabilities[o.agent].includes(t.type), 'claimed a task it cannot do');
            leasedBy.set(t.id, agentId);
          }
          // Order: the claim took the best eligible queued tasks, best first.
          const eligible = before
            .filter((t) => t.status === 'queued' && capabilities[o.agent].includes(t.type))
            .sort((x, y) => y.priority - x.priority || x.id - y.id);
          const room = 3 - before.filter((t) => t.status === 'leased' && t.agentId === agentId).length;
          assert.deepEqual(claimed.map((t) => t.id), eligible.slice(0, Math.max(0, Math.min(o.max, room))).map((t) => t.id));
          break;
        }
        case 'complete':
        case 'fail':
        case 'extend': {
          const picked = pickLeased(o.pick);
          if (!picked) break;
          const [id, agentId] = picked;
          if (o.kind === 'complete') await fleet.tasks.complete({ id, agentId, result: { ok: true } });
          else if (o.kind === 'fail') await fleet.tasks.fail({ id, agentId, error: 'x', retryable: o.retryable });
          else {
            await fleet.tasks.extend({ id, agentId });
            break;
          }
          leasedBy.delete(id);
          break;
        }
        case 'wrongAgent': {
          const picked = pickLeased(o.pick);
          if (!picked) break;
          const [id, holder] = picked;
          const intruder = agents.find((a) => a !== holder)!;
          await assert.rejects(fleet.tasks.complete({ id, agentId: intruder }), (e: FleetError) => e.code === 'FLEETD_ERR_LEASE_LOST');
          break;
        }
        case 'cancel': {
          const ids = [...acknowledged];
          const id = ids[o.pick % ids.length];
          if (id === undefined) break;
          try {
            await fleet.tasks.cancel(id);
            leasedBy.delete(id);
          } catch (e) {
            assert.equal((e as FleetError).code, 'FLEETD_ERR_TASK_STATE');
          }
          break;
        }
        case 'advance': {
          clock += o.ms;
          await fleet.timers.leases.runOnce(clock);
          await fleet.timers.scheduled.runOnce(clock);
          for (const t of await allTasks()) if (t.status !== 'leased') leasedBy.delete(t.id);
          break;
        }
      }

      const tasks = await allTasks();
      // No loss: every acknowledged task is still there.
      assert.deepEqual(new Set(tasks.map((t) => t.id)), acknowledged);
      // Leases agree with what the agents were handed, one holder each.
      for (const t of tasks) {
        if (t.status === 'leased') assert.equal(t.agentId, leasedBy.get(t.id), `lease of ${t.id}`);
        assert.ok(t.attempts <= t.maxAttempts);
      }
      // Counters equal a recount.
      const stats = await fleet.stats.snapshot();
      const recount: Record<string, number> = {};
      for (const t of tasks) recount[t.status] = (recount[t.status] ?? 0) + 1;
      for (const [status, n] of Object.entries(stats.tasks.byStatus)) assert.equal(n, recount[status] ?? 0, `count of ${status}`);
    }
  } finally {
    fleet.stop();
    await store.close();
  }
}

describe('queue properties', () => {
  it('keep the invariants under random interleavings of every operation', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 5, maxLength: 40 }), (ops) => runScenario(ops)),
      { numRuns: 150 },
    );
  });
});
