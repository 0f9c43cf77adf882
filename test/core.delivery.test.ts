import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it, mock } from 'node:test';
import { LocalBus } from '../src/bus/local-bus.js';
import { resolveConfig } from '../src/config.js';
import { ClaimWaiters } from '../src/core/claim-waiters.js';
import { LOST_CLAIM_SETTLE_MS, TaskDelivery, shortfall, type DeliveryTransition } from '../src/core/delivery.js';
import { dependencyUnavailable, FleetError, isDependencyUnavailable } from '../src/domain/errors.js';
import { Fleet } from '../src/core/fleet.js';
import { requirementKey } from '../src/domain/requirements.js';
import type { Task } from '../src/domain/types.js';
import { openSqlite } from '../src/store/sqlite/driver.js';

/**
 * The delivery's rules on the real domain and a real (in-memory) SQLite store, with the clock and
 * timers faked: a long-poll's deadline passes only when the test moves time. Each test waits for
 * the state it needs (a long-poll WAITING, a channel IDLE again) through the transitions the
 * delivery reports, never for a fixed time.
 */

type Match = (t: DeliveryTransition) => boolean;

/** The state machines as docs/delivery.md draws them: every reported transition must be one of these. */
const DOCUMENTED = new Set([
  'poll claiming→waiting',
  'poll claiming→done',
  'poll waiting→claiming',
  'poll waiting→done',
  'channel idle→claiming',
  'channel idle→closed',
  'channel claiming→idle',
  'channel claiming→closed',
]);

/** Records every transition; `seen` resolves once `n` of them match, whether they happened already or are still to come. */
class Transitions {
  readonly log: DeliveryTransition[] = [];
  readonly undocumented: string[] = [];
  private waits: { match: Match; n: number; resolve: () => void }[] = [];

  record = (t: DeliveryTransition): void => {
    const name = `${t.kind} ${t.from}→${t.to}`;
    if (!DOCUMENTED.has(name)) this.undocumented.push(name);
    this.log.push(t);
    this.waits = this.waits.filter((w) => (this.count(w.match) >= w.n ? (w.resolve(), false) : true));
  };

  count(match: Match): number {
    return this.log.filter(match).length;
  }

  seen(match: Match, n = 1): Promise<void> {
    if (this.count(match) >= n) return Promise.resolve();
    return new Promise((resolve) => this.waits.push({ match, n, resolve }));
  }

  of(agentId: string): string[] {
    return this.log.filter((t) => t.agentId === agentId).map((t) => `${t.from}→${t.to}`);
  }
}

const to = (agentId: string, state: string): Match => (t) => t.agentId === agentId && t.to === state;

/** Lets the event loop run once: store writes (group commit on setImmediate) and the promise chains after them settle. */
const settle = () => new Promise((resolve) => setImmediate(resolve));

interface Setup {
  fleet: Fleet;
  delivery: TaskDelivery;
  waiters: ClaimWaiters;
  transitions: Transitions;
  errors: unknown[];
  /** Holds every claim's answer until `release()`: the claim has happened in the store, its caller has not yet seen it. */
  hold(): { release: () => void; reached: Promise<void> };
  /** The next claim happens in the store, and its answer is lost as with a dropped connection: it rejects as unavailable. */
  loseNextAnswer(): void;
  /** A long-poll of up to `max` tasks whose answer is lost: the store leased them, the caller got a 503. */
  loseClaim(agentId: string, max: number): Promise<void>;
  /** The next `n` claims reject as unavailable without reaching the store, as while it is known to be down. */
  failNextClaims(n: number): void;
  /**
   * Holds the next claim until `release()`, then refuses it without reaching the store, as a
   * PostgreSQL pool with no connection free in time: no outage, so its wake-ups are handed on.
   */
  refuseNextClaim(): { release: () => void; reached: Promise<void> };
  /** The next `n` reads of lost claims' leases reject as unavailable. */
  failLostReads(n: number): void;
  /** The store's next read of tasks' dependencies finds no pooled connection in time. */
  failNextDependencyRead(): void;
  /** Holds the next read of lost claims' leases until it is released, or failed as unavailable. */
  holdLostRead(): { release: () => void; fail: () => void; reached: Promise<void> };
  agent(capabilities: string[], maxConcurrency?: number): Promise<string>;
  submit(...tasks: { type: string; priority?: number }[]): Promise<Task[]>;
  status(id: number): Promise<{ status: string; agentId: string | null }>;
  /** Transactions the store has committed so far. */
  commits(): number;
  close(): Promise<void>;
}

function setup(): Setup {
  const driver = openSqlite({ dataDir: ':memory:' });
  let failDependencyRead = false;
  // As a PostgreSQL pool with no connection free in time would answer the read after a claim.
  const store: typeof driver.store = {
    ...driver.store,
    taskDependencies: (params) => {
      if (!failDependencyRead) return driver.store.taskDependencies(params);
      failDependencyRead = false;
      return Promise.reject(new FleetError('FLEETD_ERR_STORE_UNAVAILABLE', 'no database connection became free within 200 ms'));
    },
  };
  const errors: unknown[] = [];
  const log = { info() {}, warn() {}, error: (obj: object) => void errors.push(obj) };
  // Leases long enough that none expires while a test moves the clock past a deadline.
  const config = resolveConfig({ taskLeaseMs: 3_600_000 }, {});
  const fleet = new Fleet({ store, bus: new LocalBus(), config, log, now: () => Date.now() });
  // A delivery of the test's own on the fleet's bus and claims (the fleet is not started, so its own
  // delivery listens to nothing): it reports transitions, and its claims can be held at a gate.
  const waiters = new ClaimWaiters();
  const transitions = new Transitions();
  let gate: { open: Promise<void>; arrived: () => void } | undefined;
  let loseAnswer = false;
  let failingClaims = 0;
  let refusing: { open: Promise<void>; arrived: () => void } | undefined;
  let failingReads = 0;
  let readGate: { open: Promise<boolean>; arrived: () => void } | undefined;
  const delivery = new TaskDelivery({
    waiters,
    bus: fleet.bus,
    now: () => Date.now(),
    log,
    onTransition: transitions.record,
    claimOnCredit: store.writesInStartOrder,
    claimReady: async (params) => {
      if (failingClaims > 0) {
        failingClaims--;
        throw dependencyUnavailable('postgres', 'the database is unavailable');
      }
      if (refusing) {
        const { open, arrived } = refusing;
        refusing = undefined;
        arrived();
        await open;
        throw new FleetError('FLEETD_ERR_STORE_UNAVAILABLE', 'no database connection became free within 5000 ms');
      }
      const claimed = await fleet.tasks.claimReady(params);
      if (gate) {
        const { open, arrived } = gate;
        arrived();
        await open;
      }
      if (loseAnswer) {
        loseAnswer = false;
        throw dependencyUnavailable('postgres', 'the database connection was lost: Connection terminated unexpectedly', 1, true);
      }
      return claimed;
    },
    leasedByClaims: async (agentId, claimIds, except) => {
      if (failingReads > 0) {
        failingReads--;
        throw dependencyUnavailable('postgres', 'connect ECONNREFUSED');
      }
      if (readGate) {
        const { open, arrived } = readGate;
        readGate = undefined;
        arrived();
        if (!(await open)) throw dependencyUnavailable('postgres', 'connect ECONNREFUSED');
      }
      return fleet.tasks.leasedByClaims(agentId, claimIds, except);
    },
    leasedTo: (agentId) => fleet.tasks.leasedTo(agentId),
  });
  delivery.start();
  return {
    fleet,
    delivery,
    waiters,
    transitions,
    errors,
    hold() {
      let release = () => {};
      let arrived = () => {};
      const open = new Promise<void>((resolve) => (release = () => ((gate = undefined), resolve())));
      const reached = new Promise<void>((resolve) => (arrived = resolve));
      gate = { open, arrived };
      return { release, reached };
    },
    loseNextAnswer() {
      loseAnswer = true;
    },
    async loseClaim(agentId, max) {
      loseAnswer = true;
      await assert.rejects(delivery.claim({ agentId, max, waitMs: 0 }), isDependencyUnavailable);
    },
    failNextClaims(n) {
      failingClaims = n;
    },
    refuseNextClaim() {
      let release = () => {};
      let arrived = () => {};
      const open = new Promise<void>((resolve) => (release = resolve));
      const reached = new Promise<void>((resolve) => (arrived = resolve));
      refusing = { open, arrived };
      return { release, reached };
    },
    failLostReads(n) {
      failingReads = n;
    },
    failNextDependencyRead() {
      failDependencyRead = true;
    },
    holdLostRead() {
      let settleRead = (_ok: boolean) => {};
      let arrived = () => {};
      const open = new Promise<boolean>((resolve) => (settleRead = resolve));
      const reached = new Promise<void>((resolve) => (arrived = resolve));
      readGate = { open, arrived };
      return { release: () => settleRead(true), fail: () => settleRead(false), reached };
    },
    async agent(capabilities, maxConcurrency = 10) {
      return (await fleet.agents.register({ name: 'a', capabilities, maxConcurrency }, 'default')).agent.id;
    },
    async submit(...tasks) {
      return (await fleet.tasks.submitBatch(tasks.map((t) => ({ type: t.type, priority: t.priority ?? 0, requires: [t.type] })))).map((r) => r.task);
    },
    async status(id) {
      const task = await fleet.tasks.get(id);
      return { status: task.status, agentId: task.agentId };
    },
    commits: () => driver.database.groupCommit.groups,
    async close() {
      delivery.stop();
      await driver.close();
    },
  };
}

/** A push connection's side: what it was sent, whether sending works, and a wait for the n-th task sent. */
function socket() {
  const sent: Task[][] = [];
  let waits: { n: number; resolve: () => void }[] = [];
  const count = () => sent.reduce((n, batch) => n + batch.length, 0);
  const out = {
    sent,
    open: true,
    count,
    ids: () => sent.flat().map((t) => t.id),
    send: (tasks: Task[]) => {
      sent.push(tasks);
      waits = waits.filter((w) => (count() >= w.n ? (w.resolve(), false) : true));
      return out.open;
    },
    until: (n: number) => (count() >= n ? Promise.resolve() : new Promise<void>((resolve) => waits.push({ n, resolve }))),
  };
  return out;
}

/** With the clock moved `ms` on, `out` has been sent `ids` (in any order), and nothing a millisecond before. */
async function sentAfter(out: ReturnType<typeof socket>, ms: number, ids: number[]): Promise<void> {
  mock.timers.tick(ms - 1);
  await settle();
  assert.deepEqual(out.sent, [], `nothing sent ${ms - 1} ms on`);
  mock.timers.tick(1);
  await out.until(ids.length);
  assert.deepEqual(out.ids().sort(), [...ids].sort());
}

const agentOf = (id: string, capabilities: string[], maxConcurrency = 10) => ({ id, namespace: 'default', capabilities, maxConcurrency });

describe('task delivery', { timeout: 30_000 }, () => {
  let s: Setup;
  beforeEach(() => {
    mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 1_700_000_000_000 });
    s = setup();
  });
  afterEach(async () => {
    await s.close();
    mock.timers.reset();
    assert.deepEqual(s.errors, [], 'nothing was logged as an error (an impossible transition would be)');
    assert.deepEqual(s.transitions.undocumented, []);
  });

  describe('long-poll', () => {
    it('answers at once with ready tasks, and with [] when waitMs is 0 and nothing is ready', async () => {
      const agent = await s.agent(['a']);
      assert.deepEqual(await s.delivery.claim({ agentId: agent, max: 5, waitMs: 0 }), []);
      const [task] = await s.submit({ type: 'a' });
      const claimed = await s.delivery.claim({ agentId: agent, max: 5, waitMs: 10_000 });
      assert.deepEqual(claimed.map((t) => t.id), [task.id]);
      assert.deepEqual(s.transitions.of(agent), ['claiming→done', 'claiming→done']);
    });

    it('answers [] at its deadline and leaves nothing registered', async () => {
      const agent = await s.agent(['a']);
      let answered: Task[] | undefined;
      const poll = s.delivery.claim({ agentId: agent, max: 1, waitMs: 5_000 }).then((t) => (answered = t));
      await s.transitions.seen(to(agent, 'waiting'));
      assert.equal(s.waiters.size, 1);
      mock.timers.tick(4_999);
      await settle();
      assert.equal(answered, undefined, 'still waiting a millisecond before the deadline');
      mock.timers.tick(1);
      assert.deepEqual(await poll, []);
      assert.equal(s.waiters.size, 0);
      assert.deepEqual(s.transitions.of(agent), ['claiming→waiting', 'waiting→done']);
    });

    it('wakes only as many waiting long-polls as tasks appeared', async () => {
      const agents = [await s.agent(['a']), await s.agent(['a']), await s.agent(['a'])];
      const polls = agents.map((agentId) => s.delivery.claim({ agentId, max: 1, waitMs: 60_000 }));
      for (const agentId of agents) await s.transitions.seen(to(agentId, 'waiting'));
      const tasks = await s.submit({ type: 'a' }, { type: 'a' });
      const [first, second] = await Promise.all(polls.slice(0, 2));
      assert.deepEqual([...first, ...second].map((t) => t.id).sort(), tasks.map((t) => t.id).sort());
      // The oldest two were woken; the third was never woken to race for them.
      assert.deepEqual(s.transitions.of(agents[2]), ['claiming→waiting']);
      mock.timers.tick(60_000);
      assert.deepEqual(await polls[2], []);
    });

    it('lets a full agent sleep through new tasks until one of its own leases ends', async () => {
      const agent = await s.agent(['a'], 1);
      const [held, next] = await s.submit({ type: 'a', priority: 1 }, { type: 'a' });
      assert.deepEqual((await s.delivery.claim({ agentId: agent, max: 1, waitMs: 0 })).map((t) => t.id), [held.id]);
      const poll = s.delivery.claim({ agentId: agent, max: 1, waitMs: 60_000 });
      await s.transitions.seen(to(agent, 'waiting'));
      const before = s.transitions.of(agent).length;
      await s.submit({ type: 'a' });
      await settle();
      assert.equal(s.transitions.of(agent).length, before, 'new tasks do not wake an agent with no room');
      await s.fleet.tasks.complete({ id: held.id, agentId: agent });
      // Its own lease ended: it wakes and takes the best task waiting.
      assert.deepEqual((await poll).map((t) => t.id), [next.id]);
    });

    it('hands a wake-up it did not use on to another waiter', async () => {
      // A can do x and y, B only x. Both wait, A first.
      const a = await s.agent(['x', 'y']);
      const b = await s.agent(['x']);
      const pollA = s.delivery.claim({ agentId: a, max: 1, waitMs: 60_000 });
      await s.transitions.seen(to(a, 'waiting'));
      const pollB = s.delivery.claim({ agentId: b, max: 1, waitMs: 60_000 });
      await s.transitions.seen(to(b, 'waiting'));
      // One notification {x: 1, y: 1}: A is counted for the x task and B, who cannot do y, for
      // nothing. A then takes the y task (higher priority): without the hand-on, the x task would
      // wait for B's deadline.
      const [x, y] = await s.submit({ type: 'x' }, { type: 'y', priority: 10 });
      assert.deepEqual((await pollA).map((t) => t.id), [y.id]);
      assert.deepEqual((await pollB).map((t) => t.id), [x.id]);
    });

    it('looks again at once when tasks were announced while its claim was in flight', async () => {
      const agent = await s.agent(['a']);
      const held = s.hold();
      const poll = s.delivery.claim({ agentId: agent, max: 1, waitMs: 60_000 });
      await held.reached;
      // The claim found nothing; before its caller sees that, a task arrives. Nobody is registered
      // to be woken for it: only the generation check finds it.
      const [task] = await s.submit({ type: 'a' });
      held.release();
      assert.deepEqual((await poll).map((t) => t.id), [task.id]);
      assert.deepEqual(s.transitions.of(agent), ['claiming→done']);
    });

    it('looks again when its agent\'s room was freed while a claim that found it full was in flight', async () => {
      const agent = await s.agent(['a'], 1);
      const [held, next] = await s.submit({ type: 'a', priority: 1 }, { type: 'a' });
      await s.delivery.claim({ agentId: agent, max: 1, waitMs: 0 });
      const gate = s.hold();
      const poll = s.delivery.claim({ agentId: agent, max: 1, waitMs: 60_000 });
      await gate.reached;
      await s.fleet.tasks.complete({ id: held.id, agentId: agent });
      gate.release();
      assert.deepEqual((await poll).map((t) => t.id), [next.id]);
    });

    it('ends with [] on abort, and when its agent\'s waits are ended (an expired lease)', async () => {
      const agent = await s.agent(['a']);
      const controller = new AbortController();
      const aborted = s.delivery.claim({ agentId: agent, max: 1, waitMs: 60_000, signal: controller.signal });
      await s.transitions.seen(to(agent, 'waiting'));
      controller.abort();
      assert.deepEqual(await aborted, []);
      // The agent holds a task whose lease it lets expire while another claim of its waits.
      const { task } = await s.fleet.tasks.submit({ type: 'a', leaseMs: 1_000 });
      await s.delivery.claim({ agentId: agent, max: 1, waitMs: 0 });
      const ended = s.delivery.claim({ agentId: agent, max: 1, waitMs: 60_000 });
      await s.transitions.seen(to(agent, 'waiting'), 2);
      mock.timers.tick(1_000);
      await s.fleet.timers.leases.runOnce(Date.now());
      assert.equal((await s.status(task.id)).status, 'queued');
      // It answers with nothing, rather than take its own expired task straight back.
      assert.deepEqual(await ended, []);
      assert.equal(s.waiters.size, 0);
    });

    it('answers after the claim in flight, without waiting, when its wait is ended mid-claim', async () => {
      const agent = await s.agent(['a']);
      const gate = s.hold();
      const poll = s.delivery.claim({ agentId: agent, max: 1, waitMs: 60_000 });
      await gate.reached;
      s.delivery.endWaitsOf(agent);
      gate.release();
      assert.deepEqual(await poll, []);
      assert.deepEqual(s.transitions.of(agent), ['claiming→done']);
    });
  });

  describe('a claim whose answer was lost', () => {
    /** With the agent's lost claims due, a long-poll of up to `max` tasks whose read of them back is held on its way. */
    async function readBackHeld(agentId: string, max: number) {
      mock.timers.tick(LOST_CLAIM_SETTLE_MS);
      const read = s.holdLostRead();
      const poll = s.delivery.claim({ agentId, max, waitMs: 0 });
      await read.reached;
      return { read, poll };
    }

    it('long-poll: the next claim once the lost one has settled answers its leases, and one before answers as usual', async () => {
      const agent = await s.agent(['a']);
      const [lost1, lost2] = await s.submit({ type: 'a', priority: 1 }, { type: 'a', priority: 1 });
      await s.loseClaim(agent, 2);
      assert.deepEqual(await s.status(lost1.id), { status: 'leased', agentId: agent }, 'the store committed the claim');
      const [other] = await s.submit({ type: 'a' });
      // Too early: the lost claim's statement might still be on its way to its commit.
      assert.deepEqual((await s.delivery.claim({ agentId: agent, max: 2, waitMs: 0 })).map((t) => t.id), [other.id]);
      mock.timers.tick(LOST_CLAIM_SETTLE_MS);
      assert.deepEqual((await s.delivery.claim({ agentId: agent, max: 2, waitMs: 0 })).map((t) => t.id), [lost1.id, lost2.id]);
      assert.deepEqual(await s.delivery.claim({ agentId: agent, max: 2, waitMs: 0 }), [], 'handed over once');
    });

    it('long-poll: a full agent whose room the lost leases took is answered when they settle, not at its deadline', async () => {
      const agent = await s.agent(['a'], 1);
      const [lost] = await s.submit({ type: 'a' });
      await s.loseClaim(agent, 1);
      const poll = s.delivery.claim({ agentId: agent, max: 1, waitMs: 60_000 });
      await s.transitions.seen(to(agent, 'waiting'));
      mock.timers.tick(LOST_CLAIM_SETTLE_MS);
      assert.deepEqual((await poll).map((t) => t.id), [lost.id]);
      assert.deepEqual(s.transitions.of(agent).slice(-3), ['claiming→waiting', 'waiting→claiming', 'claiming→done']);
    });

    it('push channel: sends the lost claim\'s tasks once it has settled, with no wake-up or credit needed', async () => {
      const agent = await s.agent(['a'], 2);
      const out = socket();
      const channel = s.delivery.openChannel({ agent: agentOf(agent, ['a'], 2), send: out.send });
      const tasks = await s.submit({ type: 'a' }, { type: 'a' });
      s.loseNextAnswer();
      channel.addCredit(2);
      await s.transitions.seen(to(agent, 'idle'));
      assert.deepEqual(out.sent, []);
      await sentAfter(out, LOST_CLAIM_SETTLE_MS, tasks.map((t) => t.id));
      // The credit they took is spent: the next task waits for more.
      const [next] = await s.submit({ type: 'a' });
      await settle();
      assert.equal(out.count(), 2);
      await s.fleet.tasks.complete({ id: tasks[0].id, agentId: agent });
      channel.addCredit(1);
      await out.until(3);
      assert.equal(out.ids()[2], next.id);
      channel.close();
    });

    it('push channel: a store that stays away is asked again later, each time later', async () => {
      const agent = await s.agent(['a']);
      const out = socket();
      const channel = s.delivery.openChannel({ agent: agentOf(agent, ['a']), send: out.send });
      const [task] = await s.submit({ type: 'a' });
      s.loseNextAnswer();
      s.failLostReads(2);
      channel.addCredit(1);
      await s.transitions.seen(to(agent, 'idle'));
      mock.timers.tick(LOST_CLAIM_SETTLE_MS);
      await s.transitions.seen(to(agent, 'idle'), 2);
      mock.timers.tick(2 * LOST_CLAIM_SETTLE_MS);
      await s.transitions.seen(to(agent, 'idle'), 3);
      await sentAfter(out, 4 * LOST_CLAIM_SETTLE_MS, [task.id]);
      channel.close();
    });

    it('is not handed over again after the agent was handed every lease it holds (a welcome)', async () => {
      const agent = await s.agent(['a']);
      const [task] = await s.submit({ type: 'a' });
      await s.loseClaim(agent, 1);
      await s.delivery.handAllLeases(agent);
      mock.timers.tick(LOST_CLAIM_SETTLE_MS);
      assert.deepEqual(await s.delivery.claim({ agentId: agent, max: 1, waitMs: 0 }), []);
      assert.deepEqual(await s.status(task.id), { status: 'leased', agentId: agent });
    });

    it('long-poll: what does not fit its max is read again by the agent\'s next claim, a waiting one woken for it', async () => {
      const agent = await s.agent(['a'], 2);
      const tasks = await s.submit({ type: 'a' }, { type: 'a' });
      await s.loseClaim(agent, 2);
      const { read, poll: first } = await readBackHeld(agent, 1);
      // Started while the read is on its way: it finds the agent full and waits, with no time set to look.
      const second = s.delivery.claim({ agentId: agent, max: 1, waitMs: 60_000 });
      await s.transitions.seen(to(agent, 'waiting'));
      read.release();
      const answers = [...(await first), ...(await second)];
      assert.deepEqual(answers.map((t) => t.id).sort(), tasks.map((t) => t.id).sort());
    });

    it('a task released and leased again by a later lost claim is handed over, though a welcome had handed its first lease', async () => {
      const agent = await s.agent(['a']);
      const [task] = await s.submit({ type: 'a' });
      await s.loseClaim(agent, 1);
      await s.delivery.handAllLeases(agent);
      mock.timers.tick(10);
      await s.fleet.tasks.release({ id: task.id, agentId: agent, delayMs: 0 });
      await s.loseClaim(agent, 1);
      assert.deepEqual(await s.status(task.id), { status: 'leased', agentId: agent });
      mock.timers.tick(LOST_CLAIM_SETTLE_MS);
      assert.deepEqual((await s.delivery.claim({ agentId: agent, max: 1, waitMs: 0 })).map((t) => t.id), [task.id]);
    });

    it('a claim that leased, then could not read its tasks\' dependencies, is handed over as a lost one', async () => {
      const agent = await s.agent(['a']);
      const [first] = await s.submit({ type: 'a' });
      const { task: dependent } = await s.fleet.tasks.submit({ type: 'a', requires: ['a'], dependsOn: [first.id] });
      assert.deepEqual((await s.delivery.claim({ agentId: agent, max: 1, waitMs: 0 })).map((t) => t.id), [first.id]);
      await s.fleet.tasks.complete({ id: first.id, agentId: agent, result: 'done' });
      s.failNextDependencyRead();
      await assert.rejects(s.delivery.claim({ agentId: agent, max: 1, waitMs: 0 }), (err: FleetError) => err.code === 'FLEETD_ERR_STORE_UNAVAILABLE' && err.details.outcomeUnknown === true);
      assert.deepEqual(await s.status(dependent.id), { status: 'leased', agentId: agent });
      mock.timers.tick(LOST_CLAIM_SETTLE_MS);
      const [handed] = await s.delivery.claim({ agentId: agent, max: 1, waitMs: 0 });
      assert.equal(handed.id, dependent.id);
      assert.deepEqual(handed.dependencies?.map((d) => d.result), ['done'], 'with its dependencies\' outcomes');
    });

    it('a claim that failed before it reached the store is not remembered', async () => {
      const agent = await s.agent(['a']);
      s.failNextClaims(1);
      await assert.rejects(s.delivery.claim({ agentId: agent, max: 1, waitMs: 0 }), isDependencyUnavailable);
      assert.equal(s.delivery.lostDueAt(agent), undefined);
    });

    it('push channel: sends nothing before its first credit (the welcome comes first), lost claims\' tasks included', async () => {
      const agent = await s.agent(['a']);
      const [task] = await s.submit({ type: 'a' });
      await s.loseClaim(agent, 1);
      mock.timers.tick(LOST_CLAIM_SETTLE_MS);
      const out = socket();
      const channel = s.delivery.openChannel({ agent: agentOf(agent, ['a']), send: out.send });
      // One of the agent's leases ends while its welcome is being read.
      s.waiters.wakeAgent(agent);
      for (let i = 0; i < 5; i++) await settle();
      assert.deepEqual(out.sent, []);
      channel.addCredit(1);
      await out.until(1);
      assert.deepEqual(out.ids(), [task.id]);
      channel.close();
    });

    it('is not handed over when a welcome handed it while the read-back was on its way', async () => {
      const agent = await s.agent(['a']);
      const [task] = await s.submit({ type: 'a' });
      await s.loseClaim(agent, 1);
      const { read, poll } = await readBackHeld(agent, 1);
      const welcome = await s.delivery.handAllLeases(agent);
      read.release();
      assert.deepEqual(welcome.map((t) => t.id), [task.id]);
      assert.deepEqual(await poll, []);
    });

    it('is looked for again when the read-back fails, whatever another claim of the agent did meanwhile', async () => {
      const agent = await s.agent(['a']);
      const tasks = await s.submit({ type: 'a' }, { type: 'a' });
      await s.loseClaim(agent, 2);
      const { read, poll: first } = await readBackHeld(agent, 2);
      // A second long-poll of the agent does not read them too, nor forget them.
      assert.deepEqual(await s.delivery.claim({ agentId: agent, max: 2, waitMs: 0 }), []);
      read.fail();
      await assert.rejects(first, isDependencyUnavailable);
      mock.timers.tick(2 * LOST_CLAIM_SETTLE_MS);
      assert.deepEqual((await s.delivery.claim({ agentId: agent, max: 2, waitMs: 0 })).map((t) => t.id).sort(), tasks.map((t) => t.id).sort());
    });

    it('push channel: a later loss moves the time to look, and the channel waits for it even when full', async () => {
      const agent = await s.agent(['a'], 1);
      const out = socket();
      const channel = s.delivery.openChannel({ agent: agentOf(agent, ['a'], 1), send: out.send });
      const [lost] = await s.submit({ type: 'a' });
      s.loseNextAnswer();
      channel.addCredit(1);
      await s.transitions.seen(to(agent, 'idle'));
      mock.timers.tick(500);
      // A second claim, lost too, finds the agent full (the first claim's lease): due 1 s after it.
      s.loseNextAnswer();
      await s.submit({ type: 'a' });
      await s.transitions.seen(to(agent, 'idle'), 2);
      // The store is back: a claim finds the agent full, and nothing will wake it but the timer.
      await s.submit({ type: 'a' });
      await s.transitions.seen(to(agent, 'idle'), 3);
      await sentAfter(out, LOST_CLAIM_SETTLE_MS, [lost.id]);
      channel.close();
    });

    it('push channel: a claim lost for a channel that closed meanwhile is the welcome\'s, not the next channel\'s', async () => {
      const agent = await s.agent(['a']);
      const [task] = await s.submit({ type: 'a' });
      const old = s.delivery.openChannel({ agent: agentOf(agent, ['a']), send: socket().send });
      const gate = s.hold();
      old.addCredit(1);
      await gate.reached;
      old.close();
      s.loseNextAnswer();
      gate.release();
      await settle();
      assert.equal(s.delivery.lostDueAt(agent), undefined);
      const out = socket();
      const channel = s.delivery.openChannel({ agent: agentOf(agent, ['a']), send: out.send });
      channel.addCredit(1);
      mock.timers.tick(LOST_CLAIM_SETTLE_MS);
      await s.transitions.seen(to(agent, 'idle'));
      assert.deepEqual(out.sent, []);
      assert.deepEqual(await s.status(task.id), { status: 'leased', agentId: agent });
      channel.close();
    });

    it('a claim that fails as unavailable hands its wake-up on to nobody, itself included; the store\'s recovery wakes it', async () => {
      const agent = await s.agent(['a']);
      const out = socket();
      const channel = s.delivery.openChannel({ agent: agentOf(agent, ['a']), send: out.send });
      channel.addCredit(1);
      await s.transitions.seen(to(agent, 'idle'));
      s.failNextClaims(1);
      const [task] = await s.submit({ type: 'a' });
      await s.transitions.seen(to(agent, 'idle'), 2);
      for (let i = 0; i < 5; i++) await settle();
      assert.deepEqual(s.transitions.of(agent).slice(2), ['idle→claiming', 'claiming→idle'], 'one claim, not one after another while the store is away');
      assert.deepEqual(out.sent, []);
      // As store.listen does once the store's connections work again.
      s.delivery.tasksAvailable({ [requirementKey(['a'])]: 1 });
      await out.until(1);
      assert.deepEqual(out.ids(), [task.id]);
      channel.close();
    });
  });

  describe('push channel', () => {
    it('never sends more tasks than the credit granted; more credit brings more', async () => {
      const agent = await s.agent(['a'], 100);
      const out = socket();
      const channel = s.delivery.openChannel({ agent: agentOf(agent, ['a'], 100), send: out.send });
      channel.addCredit(3);
      // Tasks arriving in several batches, some while claims are in flight.
      for (let i = 0; i < 5; i++) await s.submit({ type: 'a' }, { type: 'a' });
      await out.until(3);
      await settle();
      assert.equal(out.count(), 3);
      assert.equal(channel.state, 'idle');
      channel.addCredit(2);
      await out.until(5);
      await settle();
      assert.equal(out.count(), 5);
      const leased = (await s.fleet.tasks.list({ agentId: agent, status: 'leased', limit: 100 })).items;
      assert.deepEqual(leased.map((t) => t.id).sort(), out.ids().sort(), 'every task sent is leased to the agent, and no other');
      channel.close();
    });

    it('looks again when tasks were announced while a claim that came back short was in flight', async () => {
      const agent = await s.agent(['a']);
      const out = socket();
      const channel = s.delivery.openChannel({ agent: agentOf(agent, ['a']), send: out.send });
      const gate = s.hold();
      channel.addCredit(2);
      await gate.reached;
      // Its credit is all in the claim in flight, so the notification counts nobody for this task.
      const [task] = await s.submit({ type: 'a' });
      gate.release();
      await out.until(1);
      assert.deepEqual(out.ids(), [task.id]);
      channel.close();
    });

    it('push channel: sends the tasks of a long-poll of its agent\'s whose answer was lost, when they fall due', async () => {
      const agent = await s.agent(['a'], 3);
      const out = socket();
      const channel = s.delivery.openChannel({ agent: agentOf(agent, ['a'], 3), send: out.send });
      channel.addCredit(1);
      await s.transitions.seen(to(agent, 'idle'));
      // A long-poll of the same agent waits in the line behind the channel.
      const poll = s.delivery.claim({ agentId: agent, max: 1, waitMs: 600_000 });
      await s.transitions.seen(to(agent, 'waiting'));
      // The channel, first, is woken for this task and goes to the back of the line.
      const [first] = await s.submit({ type: 'a' });
      await out.until(1);
      channel.addCredit(1);
      await s.transitions.seen(to(agent, 'idle'), 3);
      // The next task is the long-poll's, whose answer is lost: the store leased it to the agent.
      s.loseNextAnswer();
      const [lost] = await s.submit({ type: 'a' });
      await assert.rejects(poll, isDependencyUnavailable);
      // Nothing wakes the channel for it but credit; its task goes once the lost claim has settled.
      channel.addCredit(1);
      for (let i = 0; i < 20; i++) await settle();
      assert.deepEqual(out.ids(), [first.id], 'nothing more before the lost claim is due');
      mock.timers.tick(LOST_CLAIM_SETTLE_MS);
      for (let i = 0; i < 20 && out.count() < 2; i++) await settle();
      assert.deepEqual(out.ids(), [first.id, lost.id], 'the lost claim\'s task, sent once due');
      channel.close();
    });

    it('keeps no credit past the agent\'s maxConcurrency', async () => {
      const agent = await s.agent(['a'], 2);
      const out = socket();
      const channel = s.delivery.openChannel({ agent: agentOf(agent, ['a'], 2), send: out.send });
      channel.addCredit(5);
      await s.submit({ type: 'a' }, { type: 'a' }, { type: 'a' }, { type: 'a' });
      await out.until(2);
      // Room frees, but the credit was 2 and is spent: had 5 been kept, two more would go out now.
      for (const id of out.ids()) await s.fleet.tasks.complete({ id, agentId: agent });
      await settle();
      assert.equal(out.count(), 2);
      channel.addCredit(1);
      await out.until(3);
      channel.close();
    });

    it('spreads new tasks over channels with credit rather than filling the first', async () => {
      const agents = [await s.agent(['a']), await s.agent(['a']), await s.agent(['a'])];
      const outs = agents.map(() => socket());
      const channels = agents.map((id, i) => s.delivery.openChannel({ agent: agentOf(id, ['a']), send: outs[i].send }));
      for (const c of channels) c.addCredit(2);
      for (const id of agents) await s.transitions.seen(to(id, 'idle'));
      // One task at a time: each woken channel goes to the back of the line.
      for (let n = 0; n < 3; n++) {
        const delivered = Promise.race(outs.map((o) => o.until(o.count() + 1)));
        await s.submit({ type: 'a' });
        await delivered;
      }
      await settle();
      assert.deepEqual(outs.map((o) => o.count()), [1, 1, 1]);
      for (const c of channels) c.close();
    });

    it('hands a wake-up it did not use on to another channel', async () => {
      const a = await s.agent(['x', 'y']);
      const b = await s.agent(['x']);
      const outA = socket();
      const outB = socket();
      const channelA = s.delivery.openChannel({ agent: agentOf(a, ['x', 'y']), send: outA.send });
      const channelB = s.delivery.openChannel({ agent: agentOf(b, ['x']), send: outB.send });
      channelA.addCredit(1);
      channelB.addCredit(1);
      await s.transitions.seen(to(a, 'idle'));
      await s.transitions.seen(to(b, 'idle'));
      const [x, y] = await s.submit({ type: 'x' }, { type: 'y', priority: 10 });
      await outA.until(1);
      await outB.until(1);
      assert.deepEqual(outA.ids(), [y.id]);
      assert.deepEqual(outB.ids(), [x.id]);
      channelA.close();
      channelB.close();
    });

    it('lets a full agent\'s channel sleep through new tasks until one of its own leases ends', async () => {
      const agent = await s.agent(['a'], 1);
      const other = await s.agent(['a']);
      const [held] = await s.submit({ type: 'a' });
      await s.delivery.claim({ agentId: agent, max: 1, waitMs: 0 });
      const out = socket();
      const channel = s.delivery.openChannel({ agent: agentOf(agent, ['a'], 1), send: out.send });
      channel.addCredit(1);
      await s.transitions.seen(to(agent, 'idle'));
      // First in line with credit, but no room: the new task is counted for the next waiter instead.
      const poll = s.delivery.claim({ agentId: other, max: 1, waitMs: 60_000 });
      await s.transitions.seen(to(other, 'waiting'));
      const [forOther] = await s.submit({ type: 'a' });
      assert.deepEqual((await poll).map((t) => t.id), [forOther.id]);
      const [next] = await s.submit({ type: 'a' });
      await settle();
      assert.equal(s.transitions.count(to(agent, 'claiming')), 1, 'new tasks do not wake a full agent');
      assert.equal((await s.status(next.id)).status, 'queued');
      await s.fleet.tasks.complete({ id: held.id, agentId: agent });
      await out.until(1);
      assert.deepEqual(out.ids(), [next.id]);
      channel.close();
    });

    it('claims again when its agent\'s room was freed while a claim that found it full was in flight', async () => {
      const agent = await s.agent(['a'], 1);
      const [held, next] = await s.submit({ type: 'a', priority: 1 }, { type: 'a' });
      await s.delivery.claim({ agentId: agent, max: 1, waitMs: 0 });
      const out = socket();
      const channel = s.delivery.openChannel({ agent: agentOf(agent, ['a'], 1), send: out.send });
      const gate = s.hold();
      channel.addCredit(1);
      await gate.reached;
      await s.fleet.tasks.complete({ id: held.id, agentId: agent });
      gate.release();
      await out.until(1);
      assert.deepEqual(out.ids(), [next.id]);
      channel.close();
    });

    it('claims for a full agent when credit comes with the completion that freed its slot, in the completion\'s transaction', async () => {
      const agent = await s.agent(['a'], 1);
      const [first, second] = await s.submit({ type: 'a', priority: 1 }, { type: 'a' });
      const out = socket();
      const channel = s.delivery.openChannel({ agent: agentOf(agent, ['a'], 1), send: out.send });
      channel.addCredit(1);
      await out.until(1);
      await s.transitions.seen(to(agent, 'idle'));
      const before = s.commits();
      // As the SDK sends them: the outcome, then the slot's credit, read in one turn.
      const completed = s.fleet.tasks.complete({ id: first.id, agentId: agent });
      channel.addCredit(1);
      await completed;
      await out.until(2);
      assert.deepEqual(out.ids(), [first.id, second.id]);
      assert.equal(s.commits() - before, 1, 'the completion and the claim after it commit together');
      channel.close();
    });

    it('closed mid-claim: sends nothing, leaves the task leased to the agent, and leaves the waiters', async () => {
      const agent = await s.agent(['a']);
      const [task] = await s.submit({ type: 'a' });
      const out = socket();
      const channel = s.delivery.openChannel({ agent: agentOf(agent, ['a']), send: out.send });
      const gate = s.hold();
      channel.addCredit(1);
      await gate.reached;
      channel.close();
      gate.release();
      await settle();
      assert.deepEqual(out.sent, []);
      assert.deepEqual(await s.status(task.id), { status: 'leased', agentId: agent }, 'a reconnect resumes it; the grace or its expiry returns it');
      assert.equal(s.waiters.size, 0);
      assert.deepEqual(s.transitions.of(agent), ['idle→claiming', 'claiming→closed']);
      channel.addCredit(1);
      channel.close();
      assert.equal(channel.state, 'closed');
    });

    it('closes when a send fails, leaving the task leased to the agent', async () => {
      const agent = await s.agent(['a']);
      const out = socket();
      out.open = false;
      const channel = s.delivery.openChannel({ agent: agentOf(agent, ['a']), send: out.send });
      channel.addCredit(2);
      const [task] = await s.submit({ type: 'a' });
      await s.transitions.seen(to(agent, 'closed'));
      assert.equal(channel.state, 'closed');
      assert.deepEqual(await s.status(task.id), { status: 'leased', agentId: agent });
      assert.equal(s.waiters.size, 0);
      await s.submit({ type: 'a' });
      await settle();
      assert.equal(out.count(), 1, 'nothing more is claimed for a closed channel');
    });

    it('a channel granted credit during a claim that takes all it asked for is woken for tasks submitted meanwhile', async () => {
      const agent = await s.agent(['a']);
      const out = socket();
      const channel = s.delivery.openChannel({ agent: agentOf(agent, ['a']), send: out.send });
      const [first] = await s.submit({ type: 'a' });
      const gate = s.hold();
      channel.addCredit(1);
      await gate.reached;
      // The claim in flight took the one task it asked for; the credit granted now is more than it
      // asked, so the channel still wants a task, and the one submitted now is counted for it.
      channel.addCredit(1);
      const [second] = await s.submit({ type: 'a' });
      gate.release();
      await out.until(2);
      assert.deepEqual(out.ids(), [first.id, second.id]);
      channel.close();
    });

    it('a channel whose claim is refused (no connection free in time) claims what it was woken for, and what was announced meanwhile', async () => {
      const agent = await s.agent(['a']);
      const out = socket();
      const channel = s.delivery.openChannel({ agent: agentOf(agent, ['a']), send: out.send });
      channel.addCredit(1);
      await s.transitions.seen(to(agent, 'idle'));
      const refused = s.refuseNextClaim();
      const [first] = await s.submit({ type: 'a' });
      await refused.reached;
      // Announced while the claim in flight wants all the channel's credit: nobody is counted for it.
      const [second] = await s.submit({ type: 'a' });
      refused.release();
      await out.until(1);
      assert.deepEqual(out.ids(), [first.id]);
      assert.equal(s.errors.length, 1, 'the refused claim was logged');
      s.errors.length = 0;
      // Its next credit brings the second.
      channel.addCredit(1);
      await out.until(2);
      assert.deepEqual(out.ids(), [first.id, second.id]);
      channel.close();
    });

    it('hands on the wake-ups of a channel that closes before it could claim for them', async () => {
      const a = await s.agent(['a']);
      const b = await s.agent(['a']);
      const outA = socket();
      const channelA = s.delivery.openChannel({ agent: agentOf(a, ['a']), send: outA.send });
      // A has credit and found nothing: it waits in line, before B.
      channelA.addCredit(1);
      await s.transitions.seen(to(a, 'idle'));
      const pollB = s.delivery.claim({ agentId: b, max: 1, waitMs: 60_000 });
      await s.transitions.seen(to(b, 'waiting'));
      // A claims again, for more credit, and that claim (which finds nothing) is held; credit granted
      // meanwhile keeps it first in line for the next task, to be claimed once the claim in flight
      // answers. It closes before that.
      const gate = s.hold();
      channelA.addCredit(1);
      await gate.reached;
      channelA.addCredit(1);
      const [task] = await s.submit({ type: 'a' });
      assert.deepEqual(s.transitions.of(b), ['claiming→waiting'], 'A was counted for the task, not B');
      channelA.close();
      gate.release();
      assert.deepEqual((await pollB).map((t) => t.id), [task.id]);
      assert.deepEqual(outA.sent, []);
    });
  });

  it('stop ends every long-poll and closes every channel', async () => {
    const agent = await s.agent(['a']);
    const poll = s.delivery.claim({ agentId: agent, max: 1, waitMs: 60_000 });
    await s.transitions.seen(to(agent, 'waiting'));
    const channel = s.delivery.openChannel({ agent: { id: agent, namespace: 'default', capabilities: ['a'], maxConcurrency: 10 }, send: () => true });
    s.delivery.stop();
    assert.deepEqual(await poll, []);
    assert.equal(channel.state, 'closed');
    assert.equal(s.waiters.size, 0);
  });
});

describe('the hand-on rule', () => {
  const x = requirementKey(['x']);
  const y = requirementKey(['y']);
  const task = (type: string) => ({ namespace: 'default', requires: [type] }) as Task;

  it('hands on what the claim did not take of the tasks it was counted for', () => {
    const reasons = new Map([[x, 2]]);
    assert.deepEqual(shortfall(reasons, { tasks: [task('y'), task('x')], room: 0 }), { [x]: 1 });
    assert.deepEqual(shortfall(reasons, { tasks: [task('x'), task('x')], room: 3 }), {});
  });

  it('hands on everything when the claim failed or never happened, or found its agent full', () => {
    const reasons = new Map([[x, 2], [y, 1]]);
    assert.deepEqual(shortfall(reasons), { [x]: 2, [y]: 1 });
    assert.deepEqual(shortfall(reasons, { tasks: [], room: 0 }), { [x]: 2, [y]: 1 });
  });

  it('hands on nothing when the claim found nothing with room to spare: the requirement is empty', () => {
    assert.deepEqual(shortfall(new Map([[x, 2]]), { tasks: [], room: 4 }), {});
  });
});
