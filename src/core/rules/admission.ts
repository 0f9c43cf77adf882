import { DAY_MS, HOUR_MS, type AdmissionState, type HoldReason, type QueuedGroup, type SpentUsage, type TypePolicy } from '../../domain/type-policies.js';
import type { ClaimPlan } from '../../store/store.js';
import { Heap } from 'heap-js';
import { LAST_IN_LINE, decideLock, lockProbes, placeInLine } from './locks.js';

/**
 * A type or a concurrency key as the rules know it: its namespace's. Two namespaces' types of one
 * name share nothing, and a key's turn in the round-robin is its namespace's.
 */
const inNamespace = (namespace: string, name: string) => `${namespace}\u0000${name}`;
const pair = (namespace: string, type: string, key: string) => `${namespace}\u0000${type}\u0000${key}`;

/**
 * The one rule of fair sharing, handed to the store's claim: which queued task goes next, and which
 * are held back and why. A driver reads the state inside its claim transaction, asks `next()` for
 * the groups to take from, leases the oldest task among them, and reports it with `took` until the
 * agent's room is full or `next()` has nothing; it writes the round-robin's state (`fairUpdates`) and
 * the starts (`starts`) in the same transaction.
 *
 * Order: priority first; among equal priorities, the concurrency key whose turn it is — stride
 * scheduling, each key a pass that a task taken moves on by 1/weight, the key with the lowest pass
 * goes next, and a key that had no work for a while starts at the clock (the pass of the last key
 * served) instead of its old pass, so that it cannot take a burst of turns. Inside one key, the oldest
 * task first. A group a limit holds back is skipped for the rest of the claim; its tasks stay queued.
 *
 * Everything is per namespace: policies, pauses, leases, starts and usage are counted by
 * (namespace, type), and each namespace has its own keys' passes and its own clock. An agent only
 * claims its namespace's groups; the overview of /v1/types plans several namespaces at once.
 */
export function planClaim(state: AdmissionState, groups: QueuedGroup[], now: number): ClaimPlan {
  const policies = new Map<string, TypePolicy>(state.policies.map((p) => [inNamespace(p.namespace, p.type), p.policy]));
  const typePauses = new Map<string, number | null>();
  const keyPauses = new Map<string, number | null>();
  for (const pause of state.pauses) {
    if (pause.until !== null && pause.until <= now) continue;
    if (pause.key === null) typePauses.set(inNamespace(pause.namespace, pause.type), pause.until);
    else keyPauses.set(pair(pause.namespace, pause.type, pause.key), pause.until);
  }
  const leasedByType = new Map<string, number>();
  const leasedByPair = new Map<string, number>();
  for (const l of state.leased) {
    const t = inNamespace(l.namespace, l.type);
    leasedByType.set(t, (leasedByType.get(t) ?? 0) + l.count);
    leasedByPair.set(pair(l.namespace, l.type, l.key), l.count);
  }
  // Starts inside each type's window: by type, and by (type, key) for per-key limits.
  const startsByType = new Map<string, { count: number; oldest: number }>();
  const startsByPair = new Map<string, { count: number; oldest: number }>();
  for (const s of state.starts) {
    const oldest = s.oldest ?? now;
    const type = inNamespace(s.namespace, s.type);
    const t = startsByType.get(type);
    startsByType.set(type, { count: (t?.count ?? 0) + s.count, oldest: Math.min(t?.oldest ?? oldest, oldest) });
    startsByPair.set(pair(s.namespace, s.type, s.key), { count: s.count, oldest });
  }
  // Usage spent by type, and by (type, key) for budgets per key.
  const spentByType = new Map<string, SpentUsage>();
  const spentByPair = new Map<string, SpentUsage>();
  const earlier = (a: number | null, b: number | null) => (a === null ? b : b === null ? a : Math.min(a, b));
  for (const s of state.spent ?? []) {
    spentByPair.set(pair(s.namespace, s.type, s.key), s);
    const type = inNamespace(s.namespace, s.type);
    const t = spentByType.get(type);
    spentByType.set(
      type,
      t
        ? { ...t, tokensHour: t.tokensHour + s.tokensHour, costDay: t.costDay + s.costDay, oldestHour: earlier(t.oldestHour, s.oldestHour), oldestDay: earlier(t.oldestDay, s.oldestDay) }
        : { ...s, key: '' },
    );
  }
  const passes = new Map(state.passes.map((p) => [inNamespace(p.namespace, p.key), p.pass]));
  const clocks = new Map(state.fairClocks.map((c) => [c.namespace, c.clock]));
  const touched = new Map<string, { namespace: string; key: string }>();
  const recordedStarts: { namespace: string; type: string; key: string }[] = [];
  const heldBack: Record<string, number> = {};
  let retryAt = Infinity;

  function hold(group: QueuedGroup): HoldReason | null {
    const type = inNamespace(group.namespace, group.type);
    const typeKey = pair(group.namespace, group.type, group.key);
    for (const until of [typePauses.get(type), keyPauses.get(typeKey)]) {
      if (until === undefined) continue;
      if (until !== null) retryAt = Math.min(retryAt, until);
      return 'paused';
    }
    const policy = policies.get(type);
    if (!policy) return null;
    if (policy.maxConcurrency !== null && (leasedByType.get(type) ?? 0) >= policy.maxConcurrency) return 'maxConcurrency';
    if (policy.maxConcurrencyPerKey !== null && (leasedByPair.get(typeKey) ?? 0) >= policy.maxConcurrencyPerKey) {
      return 'maxConcurrencyPerKey';
    }
    const rate = policy.rateLimit;
    if (rate) {
      const window = rate.perKey ? startsByPair.get(typeKey) : startsByType.get(type);
      if (window && window.count >= rate.count) {
        retryAt = Math.min(retryAt, window.oldest + rate.perMs);
        return 'rateLimit';
      }
    }
    const budget = policy.budget;
    if (budget) {
      const spent = budget.perKey ? spentByPair.get(typeKey) : spentByType.get(type);
      // A spent budget frees as its oldest report leaves the window.
      if (spent && budget.tokensPerHour !== null && spent.tokensHour >= budget.tokensPerHour) {
        if (spent.oldestHour !== null) retryAt = Math.min(retryAt, spent.oldestHour + HOUR_MS);
        return 'budget';
      }
      if (spent && budget.costPerDay !== null && spent.costDay >= budget.costPerDay) {
        if (spent.oldestDay !== null) retryAt = Math.min(retryAt, spent.oldestDay + DAY_MS);
        return 'budget';
      }
    }
    return null;
  }

  const weightOf = (group: QueuedGroup) => {
    const weight = policies.get(inNamespace(group.namespace, group.type))?.keyWeights[group.key];
    return weight !== undefined && weight > 0 ? weight : 1;
  };
  const passOf = (unit: Unit) => passes.get(unit.passKey) ?? 0;
  const clockOf = (namespace: string) => clocks.get(namespace) ?? 0;
  /** A key's turn, by the key as `passes` knows it (inNamespace): its pass, or its namespace's clock if that is later. */
  const turnOf = (passKey: string, namespace: string) => Math.max(passes.get(passKey) ?? 0, clockOf(namespace));

  interface Unit {
    priority: number;
    namespace: string;
    key: string;
    /** The key as `passes` knows it (inNamespace), made once. */
    passKey: string;
    groups: QueuedGroup[];
  }
  /**
   * One priority's units of one namespace, in two heaps, so that a claim finds the next unit
   * without reading every unit's turn (a walk of 1,000 keys for each task leased was a fifth of a
   * keyed drain). A unit whose pass is at or behind the clock has the clock as its turn, so those
   * go by key alone; the others go by pass, then key. Passes and the clock only grow, so an entry
   * placed by an older pass can only be early: each heap's top is checked and placed again before
   * it is trusted, and the rest wait until they reach the top.
   */
  interface Bucket {
    namespace: string;
    behind: Heap<Unit>;
    ahead: Heap<{ unit: Unit; pass: number }>;
  }
  const byKey = (a: Unit, b: Unit) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0);
  const newBucket = (namespace: string): Bucket => ({
    namespace,
    behind: new Heap<Unit>(byKey),
    ahead: new Heap<{ unit: Unit; pass: number }>((a, b) => a.pass - b.pass || byKey(a.unit, b.unit)),
  });
  const place = (bucket: Bucket, unit: Unit) => {
    const pass = passOf(unit);
    if (pass <= clockOf(bucket.namespace)) bucket.behind.push(unit);
    else bucket.ahead.push({ unit, pass });
  };
  /** The bucket's unit whose turn comes first, and that turn: its heaps' tops placed again by their passes now. */
  const first = (bucket: Bucket): { unit: Unit; turn: number; behind: boolean } | undefined => {
    const clock = clockOf(bucket.namespace);
    for (let top = bucket.ahead.peek(); top && top.pass <= clock; top = bucket.ahead.peek()) {
      bucket.ahead.pop();
      place(bucket, top.unit);
    }
    for (let top = bucket.behind.peek(); top && passOf(top) > clock; top = bucket.behind.peek()) {
      bucket.behind.pop();
      bucket.ahead.push({ unit: top, pass: passOf(top) });
    }
    const behind = bucket.behind.peek();
    if (behind) return { unit: behind, turn: clock, behind: true };
    for (let top = bucket.ahead.peek(); top && top.pass !== passOf(top.unit); top = bucket.ahead.peek()) {
      bucket.ahead.pop();
      bucket.ahead.push({ unit: top.unit, pass: passOf(top.unit) });
    }
    const ahead = bucket.ahead.peek();
    return ahead && { unit: ahead.unit, turn: ahead.pass, behind: false };
  };

  // Buckets by priority, highest first; each priority's by namespace.
  const buckets = new Map<number, Map<string, Bucket>>();
  const units = new Map<string, Unit>();
  for (const g of groups) {
    if (g.n <= 0) continue;
    const passKey = inNamespace(g.namespace, g.key);
    const id = `${g.priority}\u0000${passKey}`;
    let unit = units.get(id);
    if (!unit) units.set(id, (unit = { priority: g.priority, namespace: g.namespace, key: g.key, passKey, groups: [] }));
    unit.groups.push({ ...g });
  }
  for (const unit of units.values()) {
    let namespaces = buckets.get(unit.priority);
    if (!namespaces) buckets.set(unit.priority, (namespaces = new Map()));
    let bucket = namespaces.get(unit.namespace);
    if (!bucket) namespaces.set(unit.namespace, (bucket = newBucket(unit.namespace)));
    place(bucket, unit);
  }
  const priorities = [...buckets.keys()].sort((a, b) => b - a);

  return {
    // Priority first; among equal priorities the earliest turn, then the namespace, then the key.
    next() {
      for (;;) {
        let best: { unit: Unit; turn: number; behind: boolean } | undefined;
        let bestBucket: Bucket | undefined;
        for (const priority of priorities) {
          for (const bucket of buckets.get(priority)!.values()) {
            const candidate = first(bucket);
            if (!candidate) continue;
            if (best && (candidate.turn > best.turn || (candidate.turn === best.turn && bucket.namespace > best.unit.namespace))) continue;
            best = candidate;
            bestBucket = bucket;
          }
          if (best) break;
        }
        if (!best || !bestBucket) return undefined;
        const unit = best.unit;
        const open: QueuedGroup[] = [];
        for (const g of unit.groups) {
          if (g.n <= 0) continue;
          if (hold(g) === null) open.push(g);
          else heldBack[g.reqKey] = (heldBack[g.reqKey] ?? 0) + g.n;
        }
        if (open.length > 0) {
          unit.groups = open;
          return open;
        }
        // Nothing left or all held: the unit is its heap's top, and leaves the claim.
        if (best.behind) bestBucket.behind.pop();
        else bestBucket.ahead.pop();
      }
    },
    took(group) {
      group.n -= 1;
      const { namespace, key } = group;
      const type = inNamespace(namespace, group.type);
      const typeKey = pair(namespace, group.type, key);
      leasedByType.set(type, (leasedByType.get(type) ?? 0) + 1);
      leasedByPair.set(typeKey, (leasedByPair.get(typeKey) ?? 0) + 1);
      if (policies.get(type)?.rateLimit) {
        recordedStarts.push({ namespace, type: group.type, key });
        const t = startsByType.get(type);
        startsByType.set(type, { count: (t?.count ?? 0) + 1, oldest: t?.oldest ?? now });
        const p = startsByPair.get(typeKey);
        startsByPair.set(typeKey, { count: (p?.count ?? 0) + 1, oldest: p?.oldest ?? now });
      }
      const passKey = inNamespace(namespace, key);
      const turn = turnOf(passKey, namespace);
      passes.set(passKey, turn + 1 / weightOf(group));
      clocks.set(namespace, turn);
      touched.set(passKey, { namespace, key });
    },
    exhausted(taken) {
      for (const g of taken) g.n = 0;
    },
    hold,
    lockedOut(group) {
      heldBack[group.reqKey] = (heldBack[group.reqKey] ?? 0) + 1;
      group.n -= 1;
    },
    locks: {
      probes: lockProbes,
      decide: (holders) => decideLock(holders, now),
      // Behind every waiting lock request; one that never comes back (its node died) leaves the
      // line at its deadline, when the claim is tried again.
      line: (resources) =>
        placeInLine(LAST_IN_LINE, resources, (inTheWay) => {
          for (const w of inTheWay) retryAt = Math.min(retryAt, w.deadline);
        }),
    },
    fairUpdates: () => {
      const keys = [...touched.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      const namespaces = [...new Set(keys.map(([, k]) => k.namespace))];
      return {
        clocks: namespaces.map((namespace) => ({ namespace, clock: clocks.get(namespace)! })),
        passes: keys.map(([id, k]) => ({ namespace: k.namespace, key: k.key, pass: passes.get(id)! })),
      };
    },
    starts: () => recordedStarts,
    heldBack: () => heldBack,
    retryAt: () => (retryAt === Infinity ? null : retryAt),
  };
}

/** The longest rate window among the policies: starts older than this count for nothing and may go. */
export const longestWindowMs = (state: Pick<AdmissionState, 'policies'>): number =>
  Math.max(0, ...state.policies.map((p) => p.policy.rateLimit?.perMs ?? 0));
