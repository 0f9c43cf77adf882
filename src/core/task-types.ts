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
import type { FleetContext } from './context.js';
import type { Store } from '../store/store.js';
import type { HeldTasks } from './maintenance/held-tasks.js';
import { planClaim } from './rules/admission.js';

export interface TypePolicyInput {
  maxConcurrency?: number;
  maxConcurrencyPerKey?: number;
  rateLimit?: { count: number; perMs: number; perKey?: boolean };
  keyWeights?: Record<string, number>;
  budget?: { tokensPerHour?: number; costPerDay?: number; perKey?: boolean };
}

/** A task type of a namespace as /v1/types shows it. */
export interface TaskTypeView {
  namespace: string;
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

type TypeOverview = Awaited<ReturnType<Store['typeOverview']>>;

/** The keys a type's detail lists: those with the most queued tasks (and, for usage, the most spent). */
const DETAIL_KEYS = 100;

/**
 * Task types at runtime: their policies (limits on concurrency and starts, keys' weights), pauses,
 * and what holds their queued tasks back. A type is its namespace's: each method names the
 * namespace it acts in, and the same name in another namespace shares nothing with it. A change
 * applies to the next claim; no lease already held is revoked. Whatever a change may free is
 * announced, so that waiting claims look again.
 */
export class TaskTypeService {
  constructor(
    private readonly ctx: FleetContext,
    private readonly holds: HeldTasks,
  ) {}

  async setPolicy(namespace: string, type: string, input: TypePolicyInput): Promise<TypePolicyRecord> {
    const policy: TypePolicy = {
      maxConcurrency: input.maxConcurrency ?? null,
      maxConcurrencyPerKey: input.maxConcurrencyPerKey ?? null,
      rateLimit: input.rateLimit ? { count: input.rateLimit.count, perMs: input.rateLimit.perMs, perKey: input.rateLimit.perKey ?? false } : null,
      keyWeights: input.keyWeights ?? {},
      budget: input.budget
        ? { tokensPerHour: input.budget.tokensPerHour ?? null, costPerDay: input.budget.costPerDay ?? null, perKey: input.budget.perKey ?? false }
        : null,
    };
    const record = await this.ctx.store.typePolicyPut({ namespace, type, policy, now: this.ctx.now() });
    await this.announce(namespace, type);
    return record;
  }

  async pause(namespace: string, type: string, input: { forMs?: number; key?: string; reason?: string }): Promise<TaskTypeView> {
    await this.known(namespace, type);
    const now = this.ctx.now();
    const until = input.forMs === undefined ? null : now + input.forMs;
    await this.ctx.store.typePause({ namespace, type, key: input.key ?? null, until, reason: input.reason ?? null, now });
    // A pause that ends by itself frees its tasks then: claims waiting for them look again.
    if (until !== null) this.holds.record({}, until);
    return this.get(namespace, type);
  }

  /** Without a key, ends every pause of the type (its own and its keys'); with one, that key's. */
  async resume(namespace: string, type: string, input: { key?: string }): Promise<TaskTypeView> {
    await this.known(namespace, type);
    await this.ctx.store.typeResume({ namespace, type, key: input.key ?? null, allKeys: input.key === undefined });
    await this.announce(namespace, type);
    return this.get(namespace, type);
  }

  async get(namespace: string, type: string, overview?: TypeOverview): Promise<TaskTypeView> {
    const [view] = await this.views([namespace], type, overview);
    if (!view) throw notFound('type', type);
    return view;
  }

  /** The type with its busiest keys and its usage. */
  async detail(namespace: string, type: string): Promise<TaskTypeView & { keys: TypeKeyView[]; usage: TypeUsage }> {
    const now = this.ctx.now();
    const usage = await this.ctx.store.usageSummary({ namespace, type, hourFrom: now - HOUR_MS, dayFrom: now - DAY_MS });
    const overview = await this.ctx.store.typeOverview({ now, type });
    const { state, groups: all } = overview;
    const view = await this.get(namespace, type, overview);
    const plan = planClaim(state, all, now);
    const keys = new Map<string, TypeKeyView>();
    const keyOf = (key: string) => {
      let k = keys.get(key);
      if (!k) keys.set(key, (k = { key: key === '' ? null : key, queued: 0, leased: 0, heldBy: null }));
      return k;
    };
    for (const g of all) {
      if (g.namespace !== namespace) continue;
      const k = keyOf(g.key);
      k.queued += g.n;
      k.heldBy = plan.hold(g) ?? k.heldBy;
    }
    for (const l of state.leased) if (l.namespace === namespace && l.type === type) keyOf(l.key).leased += l.count;
    const listed = [...keys.values()].sort((a, b) => b.queued - a.queued || b.leased - a.leased).slice(0, DETAIL_KEYS);
    return { ...view, keys: listed, usage: { ...usage, keys: usage.keys.slice(0, DETAIL_KEYS) } };
  }

  /** Every type with tasks or a policy in the namespaces (all when undefined): one entry per namespace and type. */
  list(namespaces?: NamespaceFilter): Promise<TaskTypeView[]> {
    return this.views(namespaces);
  }

  /** With `overview`, the one the caller has read (of `only`), not another. */
  private async views(namespaces: NamespaceFilter, only?: string, overview?: TypeOverview): Promise<TaskTypeView[]> {
    const now = this.ctx.now();
    const [{ state, groups }, counts] = await Promise.all([
      overview ?? this.ctx.store.typeOverview({ now, type: only }),
      this.ctx.store.taskCounts({ namespaces, byNamespace: true }),
    ]);
    const types = new Map<string, TaskTypeView>();
    const viewOf = (namespace: string, type: string) => {
      const id = `${namespace}\u0000${type}`;
      let v = types.get(id);
      if (!v) {
        v = {
          namespace,
          type,
          policy: null,
          policyUpdatedAt: null,
          counts: Object.fromEntries(TASK_STATUSES.map((s) => [s, 0])) as Record<TaskStatus, number>,
          paused: false,
          pauses: [],
          heldBack: Object.fromEntries([...HOLD_REASONS, 'total'].map((r) => [r, 0])) as Record<HoldReason | 'total', number>,
        };
        types.set(id, v);
      }
      return v;
    };
    const shown = (namespace: string, type: string) => (only === undefined || type === only) && namespaceVisible(namespaces, namespace);
    for (const c of counts) if (shown(c.namespace!, c.type)) viewOf(c.namespace!, c.type).counts[c.status] += Number(c.count);
    for (const p of state.policies) {
      if (shown(p.namespace, p.type)) Object.assign(viewOf(p.namespace, p.type), { policy: p.policy, policyUpdatedAt: p.updatedAt });
    }
    for (const pause of state.pauses) {
      if (!shown(pause.namespace, pause.type)) continue;
      const v = viewOf(pause.namespace, pause.type);
      v.pauses.push(pause);
      if (pause.key === null) v.paused = true;
    }
    // The claim's own rule says what is held back, as a claim now would see it.
    const plan = planClaim(state, groups, now);
    for (const g of groups as QueuedGroup[]) {
      if (!shown(g.namespace, g.type)) continue;
      const reason = plan.hold(g);
      if (reason === null) continue;
      const v = viewOf(g.namespace, g.type);
      v.heldBack[reason] += g.n;
      v.heldBack.total += g.n;
    }
    return [...types.values()].sort((a, b) => (a.namespace !== b.namespace ? (a.namespace < b.namespace ? -1 : 1) : a.type < b.type ? -1 : 1));
  }

  /** The type must be known in the namespace: tasks of it exist there, or it has a policy there. */
  private async known(namespace: string, type: string): Promise<void> {
    if (!(await this.ctx.store.typeExists({ namespace, type }))) throw notFound('type', type);
  }

  /** Tells this node's waiting claims that the type's queued tasks may go now (other nodes hear it from the store). */
  private async announce(namespace: string, type: string): Promise<void> {
    const { groups } = await this.ctx.store.typeOverview({ now: this.ctx.now(), type });
    const available: Record<string, number> = {};
    for (const g of groups) if (g.namespace === namespace) available[g.reqKey] = (available[g.reqKey] ?? 0) + g.n;
    if (Object.keys(available).length > 0) this.ctx.bus.publish('tasks.available', { byRequirement: available });
  }
}
