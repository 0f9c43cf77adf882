import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import fc from 'fast-check';
import { LocalBus } from '../src/bus/local-bus.js';
import { resolveConfig } from '../src/config.js';
import { Fleet } from '../src/core/fleet.js';
import { FleetError } from '../src/domain/errors.js';
import { TERMINAL_STATUSES, type Task } from '../src/domain/types.js';
import type { Store } from '../src/store/store.js';
import { openSqlite } from '../src/store/sqlite/driver.js';
import { sharedPostgres } from './store/postgres.js';

// One schema for the file's PostgreSQL runs, migrated once and reset after each run.
const postgres = sharedPostgres({ poolSize: 2 });
after(() => postgres.drop());

/**
 * Random interleavings of submit, claim, complete, fail, extend, expire and cancel, run on the real
 * domain and a real store with a clock the test moves. After every step the invariants of the
 * design must hold: nothing acknowledged is lost, no task is leased twice, claims follow priority
 * then age, finished tasks stay finished, no lease outlives its expiry, and the counters equal a
 * recount.
 */
const op = fc.oneof(
  fc.record({
    kind: fc.constant('submit' as const),
    priority: fc.integer({ min: 0, max: 3 }),
    type: fc.constantFrom('a', 'b'),
    delay: fc.constantFrom(0, 0, 500),
    namespace: fc.constantFrom('default', 'default', 'team-b'),
  }),
  fc.record({ kind: fc.constant('claim' as const), agent: fc.integer({ min: 0, max: 4 }), max: fc.integer({ min: 1, max: 4 }) }),
  fc.record({ kind: fc.constant('complete' as const), pick: fc.nat() }),
  fc.record({ kind: fc.constant('fail' as const), pick: fc.nat(), retryable: fc.boolean() }),
  fc.record({ kind: fc.constant('extend' as const), pick: fc.nat() }),
  fc.record({ kind: fc.constant('cancel' as const), pick: fc.nat() }),
  fc.record({ kind: fc.constant('wrongAgent' as const), pick: fc.nat(), action: fc.constantFrom('complete' as const, 'fail' as const, 'extend' as const) }),
  // Moving the clock runs the lease and schedule timers: leases past their expiry end (expire).
  fc.record({ kind: fc.constant('advance' as const), ms: fc.constantFrom(100, 600, 2_000) }),
);

// Agent 0 does a and b, agent 1 only a, agent 2 only b, all in default; agents 3 (a and b) and 4
// (only a) do the same in team-b, whose tasks they alone may take.
const capabilities = [['a', 'b'], ['a'], ['b'], ['a', 'b'], ['a']];
const namespaces = ['default', 'default', 'default', 'team-b', 'team-b'];
const LEASE_MS = 1_000;
const MAX_CONCURRENCY = 3;

type Op = typeof op extends fc.Arbitrary<infer T> ? T : never;

async function runScenario(store: Store, ops: Op[]) {
  let clock = 1_000_000;
  const config = resolveConfig({ taskBackoffMs: 200, taskBackoffMaxMs: 1_000, taskLeaseMs: LEASE_MS, agentStaleMs: 10 ** 9, agentOfflineMs: 2 * 10 ** 9 }, {});
  const silent = { info() {}, warn() {}, error() {} };
  const fleet = new Fleet({ store, bus: new LocalBus(), config, log: silent, now: () => clock });
  try {
    const agents: string[] = [];
    for (const [i, caps] of capabilities.entries()) {
      agents.push((await fleet.agents.register({ name: 'p', capabilities: caps, maxConcurrency: MAX_CONCURRENCY }, namespaces[i])).agent.id);
    }
    const acknowledged = new Set<number>();
    const leasedBy = new Map<number, string>();
    // Tasks that reached a terminal state, and that state: nothing in these operations may change it.
    const finished = new Map<number, string>();

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
          const { task } = await fleet.tasks.submit({ type: o.type, priority: o.priority, runAt: clock + o.delay, namespace: o.namespace });
          assert.equal(task.status, o.delay === 0 ? 'queued' : 'scheduled');
          acknowledged.add(task.id);
          break;
        }
        case 'claim': {
          const agentId = agents[o.agent];
          const before = await allTasks();
          const claimed = await fleet.delivery.claim({ agentId, max: o.max, waitMs: 0 });
          for (const t of claimed) {
            assert.ok(!leasedBy.has(t.id), `task ${t.id} handed out while still leased`);
            assert.ok(capabilities[o.agent].includes(t.type), 'claimed a task it cannot do');
            assert.equal(t.namespace, namespaces[o.agent], "claimed another namespace's task");
            assert.equal(t.leaseExpiresAt, clock + LEASE_MS);
            leasedBy.set(t.id, agentId);
          }
          // Order: the claim took the best eligible queued tasks, best first, up to the agent's room.
          const eligible = before
            .filter((t) => t.status === 'queued' && t.namespace === namespaces[o.agent] && capabilities[o.agent].includes(t.type))
            .sort((x, y) => y.priority - x.priority || x.id - y.id);
          const room = MAX_CONCURRENCY - before.filter((t) => t.status === 'leased' && t.agentId === agentId).length;
          assert.deepEqual(claimed.map((t) => t.id), eligible.slice(0, Math.max(0, Math.min(o.max, room))).map((t) => t.id));
          break;
        }
        case 'complete': {
          const picked = pickLeased(o.pick);
          if (!picked) break;
          const [id, agentId] = picked;
          const task = await fleet.tasks.complete({ id, agentId, result: { ok: true } });
          assert.equal(task.status, 'completed');
          assert.deepEqual(task.result, { ok: true });
          leasedBy.delete(id);
          finished.set(id, 'completed');
          break;
        }
        case 'fail': {
          const picked = pickLeased(o.pick);
          if (!picked) break;
          const [id, agentId] = picked;
          const task = await fleet.tasks.fail({ id, agentId, error: 'x', retryable: o.retryable });
          // A retry waits out its backoff; a failure that may not retry, or the last attempt, is dead.
          const expected = !o.retryable || task.attempts >= task.maxAttempts ? 'dead' : 'scheduled';
          assert.equal(task.status, expected);
          if (expected === 'scheduled') assert.ok(task.runAt > clock, 'a retry waits for its backoff');
          leasedBy.delete(id);
          if (expected === 'dead') finished.set(id, 'dead');
          break;
        }
        case 'extend': {
          const picked = pickLeased(o.pick);
          if (!picked) break;
          const [id, agentId] = picked;
          const task = await fleet.tasks.extend({ id, agentId });
          assert.equal(task.status, 'leased');
          assert.equal(task.leaseExpiresAt, clock + LEASE_MS);
          break;
        }
        case 'wrongAgent': {
          const picked = pickLeased(o.pick);
          if (!picked) break;
          const [id, holder] = picked;
          const intruder = agents.find((a) => a !== holder)!;
          const before = await fleet.tasks.get(id);
          const attempt =
            o.action === 'complete' ? fleet.tasks.complete({ id, agentId: intruder })
            : o.action === 'fail' ? fleet.tasks.fail({ id, agentId: intruder, error: 'x', retryable: false })
            : fleet.tasks.extend({ id, agentId: intruder });
          // Of its namespace, the task is another's lease; of another namespace, it does not exist for the intruder.
          const sameNamespace = namespaces[agents.indexOf(intruder)] === namespaces[agents.indexOf(holder)];
          await assert.rejects(attempt, (e: FleetError) => e.code === (sameNamespace ? 'FLEETD_ERR_LEASE_LOST' : 'FLEETD_ERR_NOT_FOUND'));
          assert.deepEqual(await fleet.tasks.get(id), before, 'a refused operation changed the task');
          break;
        }
        case 'cancel': {
          const ids = [...acknowledged];
          const id = ids[o.pick % ids.length];
          if (id === undefined) break;
          try {
            const task = await fleet.tasks.cancel(id);
            assert.equal(task.status, 'cancelled');
            assert.ok(!finished.has(id), `finished task ${id} was cancelled`);
            leasedBy.delete(id);
            finished.set(id, 'cancelled');
          } catch (e) {
            assert.equal((e as FleetError).code, 'FLEETD_ERR_TASK_STATE');
            assert.ok(finished.has(id), `unfinished task ${id} could not be cancelled`);
          }
          break;
        }
        case 'advance': {
          clock += o.ms;
          await fleet.timers.leases.runOnce(clock);
          await fleet.timers.scheduled.runOnce(clock);
          for (const t of await allTasks()) {
            // Expiry: no lease outlives its time, and nothing due still waits.
            if (t.status === 'leased') assert.ok(t.leaseExpiresAt! > clock, `lease of ${t.id} outlived its expiry`);
            if (t.status === 'scheduled') assert.ok(t.runAt > clock, `task ${t.id} is due but still scheduled`);
            if (t.status !== 'leased') leasedBy.delete(t.id);
            if (t.status === 'dead') finished.set(t.id, 'dead');
          }
          break;
        }
      }

      const tasks = await allTasks();
      // No loss: every acknowledged task is still there.
      assert.deepEqual(new Set(tasks.map((t) => t.id)), acknowledged);
      for (const t of tasks) {
        // Leases agree with what the agents were handed, one holder each.
        if (t.status === 'leased') assert.equal(t.agentId, leasedBy.get(t.id), `lease of ${t.id}`);
        else assert.ok(!leasedBy.has(t.id), `task ${t.id} lost its lease unseen`);
        assert.ok(t.attempts <= t.maxAttempts);
        // Finished stays finished.
        if (finished.has(t.id)) assert.equal(t.status, finished.get(t.id), `finished task ${t.id} changed`);
        else assert.ok(!TERMINAL_STATUSES.has(t.status), `task ${t.id} finished unseen as ${t.status}`);
      }
      // Counters equal a recount: by status, by type and status, and queue depth by priority.
      const stats = await fleet.stats.snapshot();
      const byStatus: Record<string, number> = {};
      const byType: Record<string, Record<string, number>> = {};
      const depth: Record<string, number> = {};
      for (const t of tasks) {
        byStatus[t.status] = (byStatus[t.status] ?? 0) + 1;
        (byType[t.type] ??= {})[t.status] = (byType[t.type][t.status] ?? 0) + 1;
        if (t.status === 'queued') depth[t.priority] = (depth[t.priority] ?? 0) + 1;
      }
      for (const [status, n] of Object.entries(stats.tasks.byStatus)) assert.equal(n, byStatus[status] ?? 0, `count of ${status}`);
      const nonZero = (counts: Record<string, number>) => Object.fromEntries(Object.entries(counts).filter(([, n]) => n !== 0));
      assert.deepEqual(
        Object.fromEntries(Object.entries(stats.tasks.byType).map(([type, counts]) => [type, nonZero(counts as Record<string, number>)]).filter(([, c]) => Object.keys(c).length > 0)),
        byType,
      );
      assert.deepEqual(nonZero(stats.tasks.queueDepthByPriority), depth);
    }
  } finally {
    fleet.stop();
  }
}

describe('queue properties', () => {
  it('keep the invariants under random interleavings of every operation (SQLite)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 5, maxLength: 40 }), async (ops) => {
        const driver = openSqlite({ dataDir: ':memory:' });
        try {
          await runScenario(driver.store, ops);
        } finally {
          await driver.close();
        }
      }),
      { numRuns: 150 },
    );
  });

  it('keep the invariants under random interleavings of every operation (PostgreSQL)', async () => {
    // Each run starts on the file's schema as its migrations left it (reset after the run before).
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 5, maxLength: 40 }), async (ops) => {
        const { driver, destroy } = await postgres.open();
        try {
          await runScenario(driver.store, ops);
        } finally {
          await destroy();
        }
      }),
      { numRuns: 25 },
    );
  });
});
