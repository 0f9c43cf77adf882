import type { Redis } from 'ioredis';
import { LRUCache } from 'lru-cache';
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';
import type { Fleet } from '../core/fleet.js';
import { FleetError } from '../domain/errors.js';
import { NO_QUOTAS, type NamespaceQuotas } from '../domain/namespaces.js';

const exceeded = (namespace: string, message: string, details: Record<string, unknown>) =>
  new FleetError('FLEETD_ERR_QUOTA_EXCEEDED', `namespace ${namespace}: ${message}`, { namespace, ...details });

/**
 * The quotas of namespaces, enforced where tasks are submitted and agents register over the API
 * (pipelines' and schedules' own tasks come from an admin's design, and are not refused). A
 * namespace without quotas costs one cached lookup. With quotas, a submit costs a count of the
 * namespace's backlog (bounded by the quota itself): concurrent submits may together pass a quota by
 * what they carry, never by more. Quotas set on another node take effect here within `quotasTtlMs`.
 */
export class NamespaceQuotaGuard {
  static readonly quotasTtlMs = 5_000;
  /** Seconds a refused submit is told to wait: backlogs drain continuously, so soon. */
  static readonly backlogRetrySeconds = 1;
  /** Seconds a refused registration is told to wait: agents leave slowly (stale, then offline). */
  static readonly agentRetrySeconds = 10;
  private readonly quotas = new LRUCache<string, NamespaceQuotas>({ max: 10_000, ttl: NamespaceQuotaGuard.quotasTtlMs });
  /** One limiter per namespace with a rate, remade when its rate changes; shared by nodes through Redis. */
  private readonly rates = new Map<string, { perSecond: number; limiter: RateLimiterAbstract }>();

  constructor(
    private readonly fleet: Fleet,
    private readonly options: { redis?: Redis; prefix: string },
  ) {}

  /** Refuses (429, with Retry-After) `count` new tasks that would pass the namespace's quotas. */
  async admitTasks(namespace: string, count: number): Promise<void> {
    const quotas = await this.quotasOf(namespace);
    if (quotas.maxQueuedTasks !== null) {
      const { queuedTasks } = await this.fleet.namespaces.usage(namespace);
      if (queuedTasks + count > quotas.maxQueuedTasks) {
        throw exceeded(namespace, `${queuedTasks} tasks wait to run and ${count} more would pass its quota of ${quotas.maxQueuedTasks}`, {
          quota: 'maxQueuedTasks',
          limit: quotas.maxQueuedTasks,
          current: queuedTasks,
          retryAfterSeconds: NamespaceQuotaGuard.backlogRetrySeconds,
        });
      }
    }
    if (quotas.maxTasksPerSecond !== null) await this.consumeRate(namespace, quotas.maxTasksPerSecond, count);
  }

  /** Refuses (429, with Retry-After) `count` new agents that would pass the namespace's quota of agents. */
  async admitAgents(namespace: string, count: number): Promise<void> {
    const { maxAgents } = await this.quotasOf(namespace);
    if (maxAgents === null) return;
    const { agents } = await this.fleet.namespaces.usage(namespace);
    if (agents + count > maxAgents) {
      throw exceeded(namespace, `${agents} agents are registered and not offline and ${count} more would pass its quota of ${maxAgents}`, {
        quota: 'maxAgents',
        limit: maxAgents,
        current: agents,
        retryAfterSeconds: NamespaceQuotaGuard.agentRetrySeconds,
      });
    }
  }

  /** Forgets the quotas read of a namespace, so that a change made on this node applies at once. */
  forget(namespace: string): void {
    this.quotas.delete(namespace);
  }

  private async quotasOf(namespace: string): Promise<NamespaceQuotas> {
    let quotas = this.quotas.get(namespace);
    if (!quotas) {
      quotas = (await this.fleet.store.namespaceGet({ name: namespace }))?.quotas ?? NO_QUOTAS;
      this.quotas.set(namespace, quotas);
    }
    return quotas;
  }

  private async consumeRate(namespace: string, perSecond: number, count: number): Promise<void> {
    let entry = this.rates.get(namespace);
    if (entry?.perSecond !== perSecond) {
      const base = { points: perSecond, duration: 1, keyPrefix: `${this.options.prefix}quota:tps` };
      const memory = new RateLimiterMemory(base);
      const { redis } = this.options;
      entry = { perSecond, limiter: redis ? new RateLimiterRedis({ ...base, storeClient: redis, insuranceLimiter: memory }) : memory };
      this.rates.set(namespace, entry);
    }
    if (count > perSecond) {
      throw exceeded(namespace, `${count} tasks in one request pass its quota of ${perSecond} per second: send them in smaller batches`, {
        quota: 'maxTasksPerSecond',
        limit: perSecond,
        retryAfterSeconds: 1,
      });
    }
    try {
      await entry.limiter.consume(namespace, count);
    } catch (rejection) {
      if (!(rejection instanceof RateLimiterRes)) throw rejection;
      throw exceeded(namespace, `more than its quota of ${perSecond} tasks per second`, {
        quota: 'maxTasksPerSecond',
        limit: perSecond,
        retryAfterSeconds: Math.max(1, Math.ceil(rejection.msBeforeNext / 1000)),
      });
    }
  }
}
