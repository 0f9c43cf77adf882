import { notFound } from '../domain/errors.js';
import {
  HOLD_REASONS,
  type HoldReason,
  type QueuedGroup,
  type TypePause,
  type TypePolicy,
  type TypePolicyRecord,
  type TypeUsage,
} from '../domain/type-policies.js';
import { TASK_STATUSES, type TaskStatus } from '../domain/types.js';
import { namespaceVisible, type NamespaceFilter } from '../domain/namespaces.js';
import { namespaceOfKey } from '../domain/requirements.js';
import type { FleetContext } from './context.js';
import type { HeldTasks } from './maintenance/held-tasks.js';
import { planClaim } from './rules/admission.js';

export interface TypePolicyInput {
  maxConcurrency?: number;
  maxConcurrencyPerKey?: number;
  rateLimit?: { count: number; perMs: number; perKey?: boolean };
  keyWeights?: Record<string, number>;
  budget?: { tokensPerHour?: number; costPerDay?: number; perKey?: boolean };
}

/** A task type as /v1/types shows it. */
export interface TaskTypeView {
  type: string;
  policy: TypePolicy | null;
  policyUpdatedAt: number | null;
  counts: Record<TaskStatus, number>;
  paused: boolean;
  pauses: TypePause[];
  heldBack: Record<HoldReason | 'total', number>;
}

export interface TypeKeyView {
  key: string | null;
  queued: number;
  leased: number;
  heldBy: HoldReason | null;
}

const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;

/** The keys a type's detail lists: those with the most queued tasks (and, for usage, the most spent). */
const DETAIL_KEYS = 100;

/**
 * Task types at runtime: their policies (limits on concurrency and starts, keys' weights), pauses,
 * and what holds their queued tasks back. A change applies to the next claim; no lease already held
 * is revoked. Whatever a change may free is announced, so that waiting claims look again.
 */
export class TaskTypeService {
  constructor(
    private readonly ctx: FleetContext,
    private readonly holds: HeldTasks,
  ) {}

  async setPolicy(type: string, input: TypePolicyInput): Promise<TypePolicyRecord> {
    const policy: TypePolicy = {
      maxConcurrency: input.maxConcurrency ?? null,
      maxConcurrencyPerKey: input.maxConcurrencyPerKey ?? null,
      rateLimit: input.rateLimit ? { count: input.rateLimit.count, perMs: input.rateLimit.perMs, perKey: input.rateLimit.perKey ?? false } : null,
      keyWeights: input.keyWeights ?? {},
      budget: input.budget
        ? { tokensPerHour: input.budget.tokensPerHour ?? null, costPerDay: input.budget.costPerDay ?? null, perKey: input.budget.perKey ?? false }
        : null,
    };
    const record = await this.ctx.store.typePolicyPut({ type, policy, now: this.ctx.now() });
    await this.announce(type);
    return record;
  }

  async pause(type: string, input: { forMs?: number; key?: string; reason?: string }): Promise<TaskTypeView> {
    await this.known(type);
    const now = this.ctx.now();
    const until = input.forMs === undefined ? null : now + input.forMs;
    await this.ctx.store.typePause({ type, key: input.key ?? null, until, reason: input.reason ?? null, now });
    // A pause that ends by itself frees its tasks then: claims waiting for them look again.
    if (until !== null) this.holds.record({}, until);
    return this.get(type);
  }

  /** Without a key, ends every pause of the type (its own and its keys'); with one, that key's. */
  async resume(type: string, input: { key?: string }): Promise<TaskTypeView> {
    await this.known(type);
    await this.ctx.store.typeResume({ type, key: input.key ?? null, allKeys: input.key === undefined });
    await this.announce(type);
    return this.get(type);
  }

  async get(type: string, namespaces?: NamespaceFilter): Promise<TaskTypeView> {
    const [view] = await this.views(type, namespaces);
    if (!view) throw notFound('type', type);
    return view;
  }

  /**
   * The type with its busiest keys and its usage. For a reader of some namespaces, keys are those
   * with queued tasks there, and usage is theirs: the store keeps usage and leases by key, not by
   * namespace, so a key's leased count and usage are its own across namespaces.
   */
  async detail(type: string, namespaces?: NamespaceFilter): Promise<TaskTypeView & { keys: TypeKeyView[]; usage: TypeUsage }> {
    const now = this.ctx.now();
    const usage = await this.ctx.store.usageSummary({ type, hourFrom: now - HOUR_MS, dayFrom: now - DAY_MS });
    const { state, groups: all } = await this.ctx.store.typeOverview({ now, type });
    const view = await this.get(type, namespaces);
    // The claim's rule is the fleet's, over every namespace's groups; what is shown is the reader's.
    const plan = planClaim(state, all, now);
    const groups = all.filter((g) => namespaceVisible(namespaces, namespaceOfKey(g.reqKey)));
    const keys = new Map<string, TypeKeyView>();
    const keyOf = (key: string) => {
      let k = keys.get(key);
      if (!k) keys.set(key, (k = { key: key === '' ? null : key, queued: 0, leased: 0, heldBy: null }));
      return k;
    };
    for (const g of groups) {
      const k = keyOf(g.key);
      k.queued += g.n;
      k.heldBy = plan.hold(g) ?? k.heldBy;
    }
    for (const l of state.leased) if (l.type === type && (namespaces === undefined || keys.has(l.key))) keyOf(l.key).leased += l.count;
    const listed = [...keys.values()].sort((a, b) => b.queued - a.queued || b.leased - a.leased).slice(0, DETAIL_KEYS);
    const usageKeys = namespaces === undefined ? usage.keys : usage.keys.filter((k) => keys.has(k.key));
    return { ...view, keys: listed, usage: { ...usage, keys: usageKeys.slice(0, DETAIL_KEYS) } };
  }

  /** Every type with tasks in the namespaces (all when undefined), or a policy. */
  list(namespaces?: NamespaceFilter): Promise<TaskTypeView[]> {
    return this.views(undefined, namespaces);
  }

  private async views(only?: string, namespaces?: NamespaceFilter): Promise<TaskTypeView[]> {
    const now = this.ctx.now();
    const [{ state, groups }, counts] = await Promise.all([this.ctx.store.typeOverview({ now, type: only }), this.ctx.store.taskCounts({ namespaces })]);
    const types = new Map<string, TaskTypeView>();
    const viewOf = (type: string) => {
      let v = types.get(type);
      if (!v) {
        v = {
          type,
          policy: null,
          policyUpdatedAt: null,
          counts: Object.fromEntries(TASK_STATUSES.map((s) => [s, 0])) as Record<TaskStatus, number>,
          paused: false,
          pauses: [],
          heldBack: Object.fromEntries([...HOLD_REASONS, 'total'].map((r) => [r, 0])) as Record<HoldReason | 'total', number>,
        };
        types.set(type, v);
      }
      return v;
    };
    for (const c of counts) if (only === undefined || c.type === only) viewOf(c.type).counts[c.status] += Number(c.count);
    for (const p of state.policies) {
      if (only !== undefined && p.type !== only) continue;
      Object.assign(viewOf(p.type), { policy: p.policy, policyUpdatedAt: p.updatedAt });
    }
    for (const pause of state.pauses) {
      if (only !== undefined && pause.type !== only) continue;
      const v = viewOf(pause.type);
      v.pauses.push(pause);
      if (pause.key === null) v.paused = true;
    }
    // The claim's own rule says what is held back, as a claim now would see it.
    const plan = planClaim(state, groups, now);
    for (const g of groups as QueuedGroup[]) {
      if (!namespaceVisible(namespaces, namespaceOfKey(g.reqKey))) continue;
      const reason = plan.hold(g);
      if (reason === null) continue;
      const v = viewOf(g.type);
      v.heldBack[reason] += g.n;
      v.heldBack.total += g.n;
    }
    return [...types.values()].sort((a, b) => (a.type < b.type ? -1 : 1));
  }

  /** The type must be known: tasks of it exist, or it has a policy. */
  private async known(type: string): Promise<void> {
    if (!(await this.ctx.store.typeExists({ type }))) throw notFound('type', type);
  }

  /** Tells this node's waiting claims that the type's queued tasks may go now (other nodes hear it from the store). */
  private async announce(type: string): Promise<void> {
    const { groups } = await this.ctx.store.typeOverview({ now: this.ctx.now(), type });
    const available: Record<string, number> = {};
    for (const g of groups) available[g.reqKey] = (available[g.reqKey] ?? 0) + g.n;
    if (Object.keys(available).length > 0) this.ctx.bus.publish('tasks.available', { byRequirement: available });
  }
}
