import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import fc from 'fast-check';
import { repeatCheck } from '../src/core/rules/idempotency.js';
import { afterFailure } from '../src/core/rules/retry.js';
import { planClaim } from '../src/core/rules/admission.js';
import { decideLock, lockProbes, resourcesClash } from '../src/core/rules/locks.js';
import type { QueuedGroup, TypePolicy } from '../src/domain/type-policies.js';
import type { Store, TaskInsertParams } from '../src/store/store.js';
import { openSqlite } from '../src/store/sqlite/driver.js';
import { sharedPostgres } from './store/postgres.js';

// One schema for the file's PostgreSQL runs, migrated once and reset after each run.
const postgres = sharedPostgres({ poolSize: 2 });
after(() => postgres.drop());

/**
 * Random submissions, claims, completions, failures, policy changes and clock moves on a real store
 * with core's rule. After every claim: never more leased than a type's or a key's limit (counted
 * when the claim leased something: a lowered limit revokes no lease), never more starts in a window
 * than the rate limit, and held-back tasks still queued with no attempt spent.
 */
const TYPES = ['a', 'b'] as const;
const KEYS = ['k1', 'k2', 'k3', null] as const;

const policyArb = fc.record({
  maxConcurrency: fc.option(fc.integer({ min: 1, max: 4 }), { nil: null }),
  maxConcurrencyPerKey: fc.option(fc.integer({ min: 1, max: 2 }), { nil: null }),
  rateLimit: fc.option(fc.record({ count: fc.integer({ min: 1, max: 3 }), perMs: fc.constantFrom(100, 500), perKey: fc.boolean() }), { nil: null }),
});

const op = fc.oneof(
  fc.record({ kind: fc.constant('submit' as const), type: fc.constantFrom(...TYPES), key: fc.constantFrom(...KEYS), n: fc.integer({ min: 1, max: 4 }) }),
  fc.record({ kind: fc.constant('claim' as const), agent: fc.integer({ min: 0, max: 1 }), max: fc.integer({ min: 1, max: 5 }) }),
  fc.record({ kind: fc.constant('complete' as const), pick: fc.nat() }),
  fc.record({ kind: fc.constant('fail' as const), pick: fc.nat() }),
  fc.record({ kind: fc.constant('policy' as const), type: fc.constantFrom(...TYPES), policy: policyArb }),
  fc.record({ kind: fc.constant('advance' as const), ms: fc.constantFrom(30, 120, 600) }),
);
type Op = typeof op extends fc.Arbitrary<infer T> ? T : never;

const insert = (type: string, key: string | null, now: number): TaskInsertParams => ({
  namespace: 'default',
  type,
  status: 'queued',
  payload: null,
  priority: 0,
  requires: ['w'],
  idempotencyKey: null,
  requestHash: null,
  maxAttempts: 100,
  leaseMs: 60_000,
  backoffMs: 0,
  runAt: now,
  executionTimeoutMs: null,
  scheduleTimeoutMs: null,
  expiresAt: null,
  tags: [],
  metadata: {},
  concurrencyKey: key,
});

async function limitsScenario(store: Store, ops: Op[]): Promise<void> {
  let now = 1_000_000;
  const agents = ['p0', 'p1'];
  await store.agentCreateMany(agents.map((id) => ({ id, name: id, capabilities: ['w'], labels: {}, maxConcurrency: 100, namespace: 'default', tokenHash: `h-${id}`, now })));
  const policies = new Map<string, TypePolicy>();
  // Starts under the policy in force, per type: a changed policy starts counting afresh.
  const starts = new Map<string, { at: number; key: string | null }[]>();
  const leased = new Map<number, { type: string; key: string | null; agent: string }>();
  for (const o of ops) {
    switch (o.kind) {
      case 'submit': {
        const tasks = Array.from({ length: o.n }, () => insert(o.type, o.key, now));
        await store.taskInsertMany({ tasks, now, onRepeat: repeatCheck('task', tasks) });
        break;
      }
      case 'policy': {
        const policy = { ...o.policy, keyWeights: {} };
        await store.typePolicyPut({ namespace: 'default', type: o.type, policy, now });
        policies.set(o.type, policy);
        starts.set(o.type, []);
        break;
      }
      case 'advance':
        now += o.ms;
        break;
      case 'complete':
      case 'fail': {
        const ids = [...leased.keys()];
        if (ids.length === 0) break;
        const id = ids[o.pick % ids.length];
        const { agent } = leased.get(id)!;
        const w =
          o.kind === 'complete'
            ? await store.taskComplete({ id, agentId: agent, result: null, now })
            : await store.taskFail({ id, agentId: agent, now, endLease: (l) => afterFailure(l, { error: 'boom', retryable: true, now, backoffMaxMs: 0 }) });
        assert.ok(w.task, 'the holder ends its own lease');
        leased.delete(id);
        break;
      }
      case 'claim': {
        const agent = agents[o.agent];
        const claim = await store.taskClaim({ agentId: agent, max: o.max, now, plan: planClaim });
        for (const t of claim.tasks) {
          leased.set(t.id, { type: t.type, key: t.concurrencyKey, agent });
          starts.get(t.type)?.push({ at: now, key: t.concurrencyKey });
        }
        for (const type of new Set(claim.tasks.map((t) => t.type))) {
          const policy = policies.get(type);
          if (!policy) continue;
          const ofType = [...leased.values()].filter((l) => l.type === type);
          if (policy.maxConcurrency !== null) assert.ok(ofType.length <= policy.maxConcurrency, `${ofType.length} of ${type} leased, limit ${policy.maxConcurrency}`);
          if (policy.maxConcurrencyPerKey !== null) {
            for (const key of new Set(claim.tasks.filter((t) => t.type === type).map((t) => t.concurrencyKey))) {
              const n = ofType.filter((l) => l.key === key).length;
              assert.ok(n <= policy.maxConcurrencyPerKey, `${n} of ${type}/${key} leased, per-key limit ${policy.maxConcurrencyPerKey}`);
            }
          }
          const rate = policy.rateLimit;
          if (rate) {
            const window = starts.get(type)!.filter((s) => s.at > now - rate.perMs);
            const groups = rate.perKey ? [...new Set(window.map((s) => s.key))].map((k) => window.filter((s) => s.key === k)) : [window];
            for (const g of groups) assert.ok(g.length <= rate.count, `${g.length} starts of ${type} in ${rate.perMs} ms, limit ${rate.count}`);
          }
        }
        for (const [reqKey, n] of Object.entries(claim.heldBack)) assert.ok(reqKey === 'w' && n > 0);
        break;
      }
      default:
        throw new Error('unknown op');
    }
  }
  // Nothing held back was failed or spent an attempt: queued tasks have the attempts their failures gave them.
  const queued = (await store.taskList({ status: 'queued', limit: 1000 })).items;
  for (const t of queued) assert.equal(t.error === null, t.attempts === 0, `task ${t.id}: attempts ${t.attempts} without a failure`);
}

/**
 * Keys with random numbers of queued tasks at one priority, claimed by random batch sizes with no
 * limits: within one round every key that still has work gets a turn, so no key is ever served two
 * more times than another key that still has work queued.
 */
async function fairnessScenario(store: Store, sizes: number[], batches: number[]): Promise<void> {
  const now = 1_000_000;
  await store.agentCreateMany([{ id: 'f', name: 'f', capabilities: ['w'], labels: {}, maxConcurrency: 10_000, namespace: 'default', tokenHash: 'h-f', now }]);
  const keys = sizes.map((_, i) => `key-${i}`);
  // Submitted key by key, so that age alone would serve them one after the other.
  for (const [i, size] of sizes.entries()) {
    const tasks = Array.from({ length: size }, () => insert('f', keys[i], now));
    await store.taskInsertMany({ tasks, now, onRepeat: repeatCheck('task', tasks) });
  }
  const served = new Map(keys.map((k) => [k, 0]));
  const remaining = new Map(keys.map((k, i) => [k, sizes[i]]));
  for (const max of batches) {
    const { tasks } = await store.taskClaim({ agentId: 'f', max, now, plan: planClaim });
    for (const t of tasks) {
      served.set(t.concurrencyKey!, served.get(t.concurrencyKey!)! + 1);
      remaining.set(t.concurrencyKey!, remaining.get(t.concurrencyKey!)! - 1);
    }
    const most = Math.max(...served.values());
    for (const k of keys) {
      if (remaining.get(k)! > 0) assert.ok(served.get(k)! >= most - 1, `${k} served ${served.get(k)} while another key got ${most}: ${JSON.stringify([...served])}`);
    }
  }
}

const fairArbs = [fc.array(fc.integer({ min: 1, max: 12 }), { minLength: 2, maxLength: 6 }), fc.array(fc.integer({ min: 1, max: 4 }), { minLength: 1, maxLength: 15 })] as const;

describe('fair sharing properties', { timeout: 600_000 }, () => {
  it('never lease beyond a limit or start beyond a rate, under random operations (SQLite)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 5, maxLength: 60 }), async (ops) => {
        const driver = openSqlite({ dataDir: ':memory:' });
        try {
          await limitsScenario(driver.store, ops);
        } finally {
          await driver.close();
        }
      }),
      { numRuns: 120 },
    );
  });

  it('never lease beyond a limit or start beyond a rate, under random operations (PostgreSQL)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 5, maxLength: 40 }), async (ops) => {
        const { driver, destroy } = await postgres.open();
        try {
          await limitsScenario(driver.store, ops);
        } finally {
          await destroy();
        }
      }),
      { numRuns: 15 },
    );
  });

  it('share fairly within one round between keys of equal priority (SQLite)', async () => {
    await fc.assert(
      fc.asyncProperty(...fairArbs, async (sizes, batches) => {
        const driver = openSqlite({ dataDir: ':memory:' });
        try {
          await fairnessScenario(driver.store, sizes, batches);
        } finally {
          await driver.close();
        }
      }),
      { numRuns: 100 },
    );
  });

  it('share fairly within one round between keys of equal priority (PostgreSQL)', async () => {
    await fc.assert(
      fc.asyncProperty(...fairArbs, async (sizes, batches) => {
        const { driver, destroy } = await postgres.open();
        try {
          await fairnessScenario(driver.store, sizes, batches);
        } finally {
          await destroy();
        }
      }),
      { numRuns: 15 },
    );
  });
});

/**
 * The plan's order against the rule written as plainly as it can be: before each step, every unit
 * (a priority, a namespace and a key) still in the claim is sorted by priority, then its turn (its
 * key's pass, or its namespace's clock if later), then namespace, then key, and the first whose
 * groups are not all held must be what `next()` returns. Random groups, weights, passes, clocks and
 * per-key limits; each step takes a task, is locked out, or finds the groups empty.
 */
const orderArb = fc.record({
  groups: fc.array(
    fc.record({
      namespace: fc.constantFrom('default', 'team-b'),
      type: fc.constantFrom('a', 'b'),
      priority: fc.constantFrom(0, 0, 5),
      key: fc.constantFrom('', 'k1', 'k2', 'k3', 'k4', 'k5'),
      n: fc.integer({ min: 0, max: 4 }),
    }),
    { maxLength: 14 },
  ),
  passes: fc.array(fc.record({ namespace: fc.constantFrom('default', 'team-b'), key: fc.constantFrom('', 'k1', 'k2', 'k3', 'k4', 'k5'), pass: fc.constantFrom(0, 0.5, 1, 2, 3.25) }), { maxLength: 8 }),
  clocks: fc.array(fc.record({ namespace: fc.constantFrom('default', 'team-b'), clock: fc.constantFrom(0, 1, 2) }), { maxLength: 2 }),
  perKey: fc.option(fc.integer({ min: 1, max: 2 }), { nil: null }),
  weights: fc.dictionary(fc.constantFrom('k1', 'k2', 'k3'), fc.constantFrom(0.5, 2, 3)),
  steps: fc.array(fc.record({ action: fc.constantFrom('took', 'took', 'took', 'lockedOut', 'exhausted'), pick: fc.nat() }), { maxLength: 40 }),
});

function orderScenario({ groups, passes, clocks, perKey, weights, steps }: typeof orderArb extends fc.Arbitrary<infer T> ? T : never): void {
  const now = 1_000;
  // One row per (req_key, type, priority, key), as the stores read them; a group's namespace is its req_key's.
  const seen = new Set<string>();
  const rows: QueuedGroup[] = [];
  for (const g of groups) {
    const reqKey = `${g.namespace}\nw`;
    const id = [reqKey, g.type, g.priority, g.key].join('|');
    if (seen.has(id)) continue;
    seen.add(id);
    rows.push({ reqKey, namespace: g.namespace, type: g.type, priority: g.priority, key: g.key, n: g.n });
  }
  const policy: TypePolicy = { maxConcurrency: null, maxConcurrencyPerKey: perKey, rateLimit: null, keyWeights: weights };
  const uniquePasses = [...new Map(passes.map((p) => [`${p.namespace}|${p.key}`, p])).values()];
  const uniqueClocks = [...new Map(clocks.map((c) => [c.namespace, c])).values()];
  const plan = planClaim(
    {
      policies: [{ namespace: 'default', type: 'a', policy, updatedAt: 0 }],
      pauses: [],
      leased: [],
      starts: [],
      fairClocks: uniqueClocks,
      passes: uniquePasses,
      spent: [],
    },
    rows,
    now,
  );
  // The reference's own copy of what the plan changes: each group's count, each key's pass and each namespace's clock.
  const left = new Map(rows.map((g) => [g, g.n]));
  const pass = new Map<string, number>(uniquePasses.map((p) => [`${p.namespace}|${p.key}`, p.pass]));
  const clock = new Map<string, number>(uniqueClocks.map((c) => [c.namespace, c.clock]));
  const turn = (namespace: string, key: string) => Math.max(pass.get(`${namespace}|${key}`) ?? 0, clock.get(namespace) ?? 0);
  const unitOf = (g: QueuedGroup) => `${g.priority}|${g.namespace}|${g.key}`;
  const gone = new Set<string>();
  const label = (g: QueuedGroup) => `${g.namespace}/${g.type}/${g.priority}/${g.key}`;
  for (const step of [...steps, { action: 'took' as const, pick: 0 }]) {
    const units = [...new Set(rows.filter((g) => left.get(g)! > 0 && !gone.has(unitOf(g))).map(unitOf))].map((u) => {
      const g = rows.find((r) => unitOf(r) === u)!;
      return { id: u, priority: g.priority, namespace: g.namespace, key: g.key, turn: turn(g.namespace, g.key) };
    });
    units.sort((a, b) => b.priority - a.priority || a.turn - b.turn || (a.namespace < b.namespace ? -1 : a.namespace > b.namespace ? 1 : 0) || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    let expected: QueuedGroup[] | undefined;
    for (const u of units) {
      const open = rows.filter((g) => unitOf(g) === u.id && left.get(g)! > 0 && plan.hold(g) === null);
      if (open.length > 0) {
        expected = open;
        break;
      }
      gone.add(u.id);
    }
    const got = plan.next();
    assert.deepEqual(got?.map(label), expected?.map(label));
    if (!got || !expected) return;
    const group = got[step.pick % got.length];
    const mine = expected[step.pick % expected.length];
    if (step.action === 'exhausted') {
      plan.exhausted(got);
      for (const g of expected) left.set(g, 0);
    } else if (step.action === 'lockedOut') {
      plan.lockedOut(group);
      left.set(mine, left.get(mine)! - 1);
    } else {
      plan.took(group);
      left.set(mine, left.get(mine)! - 1);
      const t = turn(mine.namespace, mine.key);
      const weight = mine.namespace === 'default' && mine.type === 'a' ? (weights as Record<string, number>)[mine.key] : undefined;
      pass.set(`${mine.namespace}|${mine.key}`, t + 1 / (weight !== undefined && weight > 0 ? weight : 1));
      clock.set(mine.namespace, t);
    }
  }
}

describe("fair sharing's order", () => {
  it('is the order of a sort of every unit by priority, turn, namespace and key, step by step', () => {
    fc.assert(fc.property(orderArb, orderScenario), { numRuns: 2_000 });
  });
});

/**
 * Random lock requests over a small tree of files and directories, releases and clock moves, on a
 * real store with core's rules: no two live locks ever hold clashing resources (the same name, or a
 * directory and a name below it).
 */
const NAMES = ['src/', 'src/a.ts', 'src/lib/', 'src/lib/b.ts', 'docs/', 'docs/c.md', 'src/lib/deep/d.ts', 'README.md'];
const lockOp = fc.oneof(
  fc.record({ kind: fc.constant('lock' as const), agent: fc.integer({ min: 0, max: 2 }), names: fc.uniqueArray(fc.constantFrom(...NAMES), { minLength: 1, maxLength: 3 }), ttl: fc.constantFrom(100, 1_000) }),
  fc.record({ kind: fc.constant('release' as const), pick: fc.nat() }),
  fc.record({ kind: fc.constant('advance' as const), ms: fc.constantFrom(50, 200) }),
);

async function lockScenario(store: Store, ops: (typeof lockOp extends fc.Arbitrary<infer T> ? T : never)[]): Promise<void> {
  let now = 1_000_000;
  const agents = ['l0', 'l1', 'l2'];
  await store.agentCreateMany(agents.map((id) => ({ id, name: id, capabilities: [], labels: {}, maxConcurrency: 1, namespace: 'default', tokenHash: `h-${id}`, now })));
  let seq = 0;
  for (const o of ops) {
    if (o.kind === 'advance') now += o.ms;
    else if (o.kind === 'release') {
      const live = (await store.lockList({ limit: 100 })).items;
      if (live.length > 0) await store.lockRelease({ id: live[o.pick % live.length].id });
    } else {
      const at = now;
      await store.lockAcquire({
        id: `L${++seq}`,
        namespace: 'default',
        agentId: agents[o.agent],
        resources: o.names,
        ttlMs: o.ttl,
        description: '',
        now: at,
        decide: (holders) => decideLock(holders, at),
        probes: lockProbes(o.names),
      });
    }
    const live = (await store.lockList({ limit: 100 })).items.filter((l) => l.expiresAt > now);
    for (const [i, a] of live.entries()) {
      for (const b of live.slice(i + 1)) {
        for (const ra of a.resources) {
          for (const rb of b.resources) assert.ok(!resourcesClash(ra, rb), `${a.id} holds ${ra} and ${b.id} holds ${rb}`);
        }
      }
    }
  }
}

describe('lock properties', { timeout: 600_000 }, () => {
  it('never let two live locks hold clashing resources (SQLite)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(lockOp, { minLength: 3, maxLength: 40 }), async (ops) => {
        const driver = openSqlite({ dataDir: ':memory:' });
        try {
          await lockScenario(driver.store, ops);
        } finally {
          await driver.close();
        }
      }),
      { numRuns: 150 },
    );
  });

  it('never let two live locks hold clashing resources (PostgreSQL)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(lockOp, { minLength: 3, maxLength: 30 }), async (ops) => {
        const { driver, destroy } = await postgres.open();
        try {
          await lockScenario(driver.store, ops);
        } finally {
          await destroy();
        }
      }),
      { numRuns: 15 },
    );
  });
});
