import { DAY_MS, HOUR_MS, type AdmissionState, type HoldReason, type QueuedGroup, type SpentUsage, type TypePolicy } from '../../domain/type-policies.js';
import type { ClaimPlan } from '../../store/store.js';
import { LAST_IN_LINE, decideLock, lockProbes, placeInLine } from './locks.js';

const pair = (type: string, key: string) => `${type}\u0000${key}`;

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
 */
export function planClaim(state: AdmissionState, groups: QueuedGroup[], now: number): ClaimPlan {
  const policies = new Map<string, TypePolicy>(state.policies.map((p) => [p.type, p.policy]));
  const typePauses = new Map<string, number | null>();
  const keyPauses = new Map<string, number | null>();
  for (const pause of state.pauses) {
    if (pause.until !== null && pause.until <= now) continue;
    (pause.key === null ? typePauses : keyPauses).set(pause.key === null ? pause.type : pair(pause.type, pause.key), pause.until);
  }
  const leasedByType = new Map<string, number>();
  const leasedByPair = new Map<string, number>();
  for (const l of state.leased) {
    leasedByType.set(l.type, (leasedByType.get(l.type) ?? 0) + l.count);
    leasedByPair.set(pair(l.type, l.key), l.count);
  }
  // Starts inside each type's window: by type, and by (type, key) for per-key limits.
  const startsByType = new Map<string, { count: number; oldest: number }>();
  const startsByPair = new Map<string, { count: number; oldest: number }>();
  for (const s of state.starts) {
    const oldest = s.oldest ?? now;
    const t = startsByType.get(s.type);
    startsByType.set(s.type, { count: (t?.count ?? 0) + s.count, oldest: Math.min(t?.oldest ?? oldest, oldest) });
    startsByPair.set(pair(s.type, s.key), { count: s.count, oldest });
  }
  // Usage spent by type, and by (type, key) for budgets per key.
  const spentByType = new Map<string, SpentUsage>();
  const spentByPair = new Map<string, SpentUsage>();
  const earlier = (a: number | null, b: number | null) => (a === null ? b : b === null ? a : Math.min(a, b));
  for (const s of state.spent ?? []) {
    spentByPair.set(pair(s.type, s.key), s);
    const t = spentByType.get(s.type);
    spentByType.set(
      s.type,
      t
        ? { ...t, tokensHour: t.tokensHour + s.tokensHour, costDay: t.costDay + s.costDay, oldestHour: earlier(t.oldestHour, s.oldestHour), oldestDay: earlier(t.oldestDay, s.oldestDay) }
        : { ...s, key: '' },
    );
  }
  const passes = new Map(state.passes.map((p) => [p.key, p.pass]));
  let clock = state.fairClock;
  const touched = new Set<string>();
  const recordedStarts: { type: string; key: string }[] = [];
  const heldBack: Record<string, number> = {};
  let retryAt = Infinity;

  function hold(group: QueuedGroup): HoldReason | null {
    const { type, key } = group;
    for (const until of [typePauses.get(type), keyPauses.get(pair(type, key))]) {
      if (until === undefined) continue;
      if (until !== null) retryAt = Math.min(retryAt, until);
      return 'paused';
    }
    const policy = policies.get(type);
    if (!policy) return null;
    if (policy.maxConcurrency !== null && (leasedByType.get(type) ?? 0) >= policy.maxConcurrency) return 'maxConcurrency';
    if (policy.maxConcurrencyPerKey !== null && (leasedByPair.get(pair(type, key)) ?? 0) >= policy.maxConcurrencyPerKey) {
      return 'maxConcurrencyPerKey';
    }
    const rate = policy.rateLimit;
    if (rate) {
      const window = rate.perKey ? startsByPair.get(pair(type, key)) : startsByType.get(type);
      if (window && window.count >= rate.count) {
        retryAt = Math.min(retryAt, window.oldest + rate.perMs);
        return 'rateLimit';
      }
    }
    const budget = policy.budget;
    if (budget) {
      const spent = budget.perKey ? spentByPair.get(pair(type, key)) : spentByType.get(type);
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
    const weight = policies.get(group.type)?.keyWeights[group.key];
    return weight !== undefined && weight > 0 ? weight : 1;
  };
  const turnOf = (key: string) => Math.max(passes.get(key) ?? 0, clock);

  interface Unit {
    priority: number;
    key: string;
    groups: QueuedGroup[];
  }
  const units = new Map<string, Unit>();
  for (const g of groups) {
    if (g.n <= 0) continue;
    const id = `${g.priority}\u0000${g.key}`;
    let unit = units.get(id);
    if (!unit) units.set(id, (unit = { priority: g.priority, key: g.key, groups: [] }));
    unit.groups.push({ ...g });
  }

  const before = (a: Unit, b: Unit) =>
    a.priority !== b.priority ? a.priority > b.priority : turnOf(a.key) !== turnOf(b.key) ? turnOf(a.key) < turnOf(b.key) : a.key < b.key;

  return {
    next() {
      for (;;) {
        let best: [string, Unit] | undefined;
        for (const entry of units) if (!best || before(entry[1], best[1])) best = entry;
        if (!best) return undefined;
        const [id, unit] = best;
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
      const { type, key } = group;
      leasedByType.set(type, (leasedByType.get(type) ?? 0) + 1);
      leasedByPair.set(pair(type, key), (leasedByPair.get(pair(type, key)) ?? 0) + 1);
      if (policies.get(type)?.rateLimit) {
        recordedStarts.push({ type, key });
        const t = startsByType.get(type);
        startsByType.set(type, { count: (t?.count ?? 0) + 1, oldest: t?.oldest ?? now });
        const p = startsByPair.get(pair(type, key));
        startsByPair.set(pair(type, key), { count: (p?.count ?? 0) + 1, oldest: p?.oldest ?? now });
      }
      const turn = turnOf(key);
      passes.set(key, turn + 1 / weightOf(group));
      clock = turn;
      touched.add(key);
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
    fairUpdates: () => ({ clock, passes: [...touched].sort().map((key) => ({ key, pass: passes.get(key)! })) }),
    starts: () => recordedStarts,
    heldBack: () => heldBack,
    retryAt: () => (retryAt === Infinity ? null : retryAt),
  };
}

/** The longest rate window among the policies: starts older than this count for nothing and may go. */
export const longestWindowMs = (state: Pick<AdmissionState, 'policies'>): number =>
  Math.max(0, ...state.policies.map((p) => p.policy.rateLimit?.perMs ?? 0));
