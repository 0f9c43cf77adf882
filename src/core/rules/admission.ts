import { DAY_MS, HOUR_MS, type AdmissionState, type HoldReason, type QueuedGroup, type SpentUsage, type TypePolicy } from '../../domain/type-policies.js';
import type { ClaimPlan } from '../../store/store.js';
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
  /** A key's turn, by the key as `passes` knows it (inNamespace): its pass, or its namespace's clock if that is later. */
  const turnOf = (passKey: string, namespace: string) => Math.max(passes.get(passKey) ?? 0, clocks.get(namespace) ?? 0);

  interface Unit {
    priority: number;
    namespace: string;
    key: string;
    /** The key as `passes` knows it (inNamespace), made once: `next` reads every unit's turn on every call. */
    passKey: string;
    groups: QueuedGroup[];
  }
  const units = new Map<string, Unit>();
  for (const g of groups) {
    if (g.n <= 0) continue;
    const passKey = inNamespace(g.namespace, g.key);
    const id = `${g.priority}\u0000${passKey}`;
    let unit = units.get(id);
    if (!unit) units.set(id, (unit = { priority: g.priority, namespace: g.namespace, key: g.key, passKey, groups: [] }));
    unit.groups.push({ ...g });
  }

  const before = (a: Unit, turnA: number, b: Unit, turnB: number) => {
    if (a.priority !== b.priority) return a.priority > b.priority;
    if (turnA !== turnB) return turnA < turnB;
    return a.namespace !== b.namespace ? a.namespace < b.namespace : a.key < b.key;
  };

  return {
    next() {
      for (;;) {
        // A walk of every unit, each turn read once: with 1,000 keys queued, a string made for each
        // side of each comparison (the namespace's key) had halved the drain of keyed tasks.
        let best: Unit | undefined;
        let bestId = '';
        let bestTurn = 0;
        for (const [candidateId, candidate] of units) {
          const turn = turnOf(candidate.passKey, candidate.namespace);
          if (best && !before(candidate, turn, best, bestTurn)) continue;
          best = candidate;
          bestId = candidateId;
          bestTurn = turn;
        }
        if (!best) return undefined;
        const id = bestId;
        const unit = best;
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
        units.delete(id);
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
