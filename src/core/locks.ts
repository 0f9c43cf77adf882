import { randomUUID } from 'node:crypto';
import type { FleetContext } from './context.js';
import { FleetError, invalid, notFound } from '../domain/errors.js';
import type { LockExpirer } from './maintenance/lock-expirer.js';
import { decideLock } from './rules/locks.js';
import type { Lock, Page } from '../domain/types.js';

export interface LockInput {
  agentId: string;
  resources: string[];
  ttlMs: number;
  description?: string;
}

/** Exclusive, all-or-nothing locks on named resources (files, URLs, anything), held by agents until released, expired or the agent goes offline. */
export class LockService {
  constructor(private readonly ctx: FleetContext, private readonly timers: { locks: LockExpirer }) {}

  async acquire(input: LockInput): Promise<Lock> {
    if (input.ttlMs > this.ctx.config.maxLockTtlMs) {
      throw invalid('ttlMs', `is over the limit of ${this.ctx.config.maxLockTtlMs} ms`, { max: this.ctx.config.maxLockTtlMs });
    }
    const resources = [...new Set(input.resources)];
    const agent = await this.ctx.store.agentGet({ id: input.agentId });
    if (!agent) throw notFound('agent', input.agentId);
    if (agent.status === 'offline') {
      throw new FleetError('FLEETD_ERR_AGENT_OFFLINE', `agent ${input.agentId} is offline; heartbeat before taking locks`, {
        agentId: input.agentId,
      });
    }
    const now = this.ctx.now();
    const result = await this.ctx.store.lockAcquire({
      id: randomUUID(),
      agentId: input.agentId,
      resources,
      ttlMs: input.ttlMs,
      description: input.description ?? '',
      now,
      decide: (holders) => decideLock(holders, now),
    });
    if (!result.acquired) {
      const held = result.conflicts.map((c) => `${c.resource} (agent ${c.agentId})`).join(', ');
      throw new FleetError('FLEETD_ERR_LOCK_CONFLICT', `already locked: ${held}`, { conflicts: result.conflicts });
    }
    this.ctx.bus.publish('lock.acquired', { lock: result.lock });
    this.timers.locks.poke(result.lock.expiresAt);
    return result.lock;
  }

  async release(id: string, agentId?: string): Promise<Lock> {
    const release = await this.ctx.store.lockRelease({ id, holder: agentId });
    const lock = release.released;
    if (!lock) {
      if (release.current) throw new FleetError('FLEETD_ERR_FORBIDDEN', `lock ${id} is held by another agent`, { lockId: id });
      throw notFound('lock', id);
    }
    this.ctx.bus.publish('lock.released', { lock, reason: 'released' });
    return lock;
  }

  async get(id: string): Promise<Lock> {
    const lock = await this.ctx.store.lockGet({ id });
    if (!lock) throw notFound('lock', id);
    return lock;
  }

  list(params: { agentId?: string; limit: number; cursor?: string }): Promise<Page<Lock>> {
    return this.ctx.store.lockList(params);
  }
}
