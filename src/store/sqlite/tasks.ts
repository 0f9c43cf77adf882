import { notFound } from '../../domain/errors.js';
import type { QueuedGroup } from '../../domain/type-policies.js';
import { requirementKey, requirementsOf } from '../../domain/requirements.js';
import type { Task, TaskCount, TaskStatus } from '../../domain/types.js';
import { mapPage } from '../keyset.js';
import * as lists from '../lists.js';
import { endingLease, leaseEndColumns, toAgent, toTask, type AgentRow, type TaskRow } from '../rows.js';
import { TASK_LOCK_TTL_MS, taskLockId, type ClaimPlan, type EndLease, type LockAcquireParams, type LockAcquireResult, type TaskStore, type TaskTransition, type TaskWrite } from '../store.js';
import type { SqliteDatabase } from './database.js';
import type { SqliteAdmission } from './types.js';

/** The tasks area of the SQLite driver, and the lease ending that agents' release shares. */
export function sqliteTasks(d: SqliteDatabase, admission: SqliteAdmission, acquireLock: (params: LockAcquireParams) => LockAcquireResult): { store: TaskStore; endLeasesOf: (agentId: string, now: number, endLease: EndLease) => TaskTransition[] } {
  const { db, groupCommit } = d;
  const s = {
    insert: db.prepare(`INSERT INTO tasks (type, req_key, payload, priority, status, idempotency_key, request_hash,
        max_attempts, lease_ms, backoff_ms, run_at, created_at, updated_at, concurrency_key, locks)
      VALUES (@type, @req_key, @payload, @priority, @status, @idempotency_key, @request_hash,
        @max_attempts, @lease_ms, @backoff_ms, @run_at, @now, @now, @concurrency_key, @locks) RETURNING *`),
    byKey: db.prepare('SELECT * FROM tasks WHERE idempotency_key = ?'),
    byId: db.prepare('SELECT * FROM tasks WHERE id = ?'),
    queuedKeys: db.prepare("SELECT DISTINCT req_key FROM task_counts WHERE status = 'queued' AND n > 0").pluck(),
    claimCandidates: db.prepare("SELECT id, priority FROM tasks WHERE status = 'queued' AND req_key = ? ORDER BY priority DESC, id LIMIT ?"),
    lease: db.prepare(`UPDATE tasks SET status = 'leased', agent_id = @agent_id, attempts = attempts + 1,
        claimed_at = @now, updated_at = @now, lease_expires_at = @now + lease_ms
      WHERE id = @id AND status = 'queued' RETURNING *`),
    agentById: db.prepare('SELECT * FROM agents WHERE id = ?'),
    agentHeartbeat: db.prepare("UPDATE agents SET last_heartbeat_at = @now, status = 'online' WHERE id = @id RETURNING *"),
    inFlight: db.prepare("SELECT count(*) FROM tasks WHERE agent_id = ? AND status = 'leased'").pluck(),
    leasedTo: db.prepare("SELECT * FROM tasks WHERE agent_id = ? AND status = 'leased'"),
    leasedBy: db.prepare("SELECT * FROM tasks WHERE id = ? AND status = 'leased' AND agent_id = ?"),
    complete: db.prepare(`UPDATE tasks SET status = 'completed', result = @result, completed_at = @now,
        updated_at = @now, lease_expires_at = NULL
      WHERE id = @id AND status = 'leased' AND agent_id = @agent_id RETURNING *`),
    endLease: db.prepare(`UPDATE tasks SET status = @status, run_at = coalesce(@run_at, run_at), completed_at = @completed_at,
        error = @error, updated_at = @now, lease_expires_at = NULL WHERE id = @id AND status = 'leased' RETURNING *`),
    release: db.prepare(`UPDATE tasks SET status = @status, run_at = @run_at, attempts = max(0, attempts - 1), error = @error,
        updated_at = @now, lease_expires_at = NULL
      WHERE id = @id AND status = 'leased' AND agent_id = @agent_id RETURNING *`),
    extend: db.prepare(`UPDATE tasks SET lease_expires_at = @now + coalesce(@lease_ms, lease_ms), updated_at = @now
      WHERE id = @id AND status = 'leased' AND agent_id = @agent_id RETURNING *`),
    cancel: db.prepare(`UPDATE tasks SET status = 'cancelled', completed_at = @now, updated_at = @now, lease_expires_at = NULL
      WHERE id = @id AND status IN (SELECT value FROM json_each(@from)) RETURNING *`),
    retry: db.prepare(`UPDATE tasks SET status = 'queued', attempts = 0, run_at = @now, updated_at = @now,
        completed_at = NULL, result = NULL, error = NULL, lease_expires_at = NULL
      WHERE id = @id AND status IN (SELECT value FROM json_each(@from)) RETURNING *`),
    expiredLeases: db.prepare("SELECT * FROM tasks WHERE status = 'leased' AND lease_expires_at <= ? ORDER BY lease_expires_at LIMIT ?"),
    dueScheduled: db.prepare(
      "UPDATE tasks SET status = 'queued', updated_at = @now WHERE id IN (SELECT id FROM tasks WHERE status = 'scheduled' AND run_at <= @now ORDER BY run_at LIMIT @limit) RETURNING *",
    ),
    deleteFinished: db.prepare('DELETE FROM tasks WHERE id IN (SELECT id FROM tasks WHERE completed_at IS NOT NULL AND completed_at < ? LIMIT ?)'),
    deleteFinishedBeyond: db.prepare(
      'DELETE FROM tasks WHERE id IN (SELECT id FROM tasks WHERE completed_at IS NOT NULL ORDER BY completed_at DESC LIMIT ? OFFSET ?)',
    ),
    nextLeaseExpiry: db.prepare("SELECT min(lease_expires_at) FROM tasks WHERE status = 'leased'").pluck(),
    nextRunAt: db.prepare("SELECT min(run_at) FROM tasks WHERE status = 'scheduled'").pluck(),
    counts: db.prepare('SELECT type, priority, status, sum(n) AS count FROM task_counts WHERE n > 0 GROUP BY type, priority, status'),
  };

  /** Inside a claim's write: takes the task's locks for the agent about to lease it, if it has any; false when they are held. */
  const locksTaken = (id: number, plan: ClaimPlan, agentId: string, now: number): boolean => {
    const row = s.byId.get(id) as TaskRow;
    const resources = JSON.parse(row.locks) as string[];
    if (resources.length === 0) return true;
    return acquireLock({
      id: taskLockId(id),
      agentId,
      resources,
      ttlMs: TASK_LOCK_TTL_MS,
      description: `task ${id}`,
      now,
      decide: plan.locks.decide,
      probes: plan.locks.probes(resources),
    }).acquired;
  };

  /** Inside a write: ends the leases of these rows as core's rule decides. */
  const endLeases = (rows: TaskRow[], now: number, endLease: EndLease): TaskTransition[] =>
    rows.map((row) => ({
      task: toTask(s.endLease.get({ id: row.id, now, ...leaseEndColumns(endLease(endingLease(row)), now) }) as TaskRow),
      from: row.status,
    }));

  /** Inside a write: the result of a conditional write, or the row as it is now. */
  const written = (row: TaskRow | undefined, id: number): TaskWrite => {
    if (row) return { task: toTask(row) };
    const current = s.byId.get(id) as TaskRow | undefined;
    return { task: undefined, current: current && toTask(current) };
  };

  const store: TaskStore = {
    taskInsertMany(params) {
      return groupCommit.write(() =>
        params.tasks.map((t, index) => {
          if (t.idempotencyKey !== null) {
            const existing = s.byKey.get(t.idempotencyKey) as TaskRow | undefined;
            if (existing) {
              params.onRepeat({ index, existing: { id: existing.id, requestHash: existing.request_hash } });
              return { task: toTask(existing), created: false };
            }
          }
          const row = s.insert.get({
            type: t.type,
            req_key: requirementKey(t.requires),
            payload: JSON.stringify(t.payload),
            priority: t.priority,
            status: t.status,
            idempotency_key: t.idempotencyKey,
            request_hash: t.requestHash,
            max_attempts: t.maxAttempts,
            lease_ms: t.leaseMs,
            backoff_ms: t.backoffMs,
            run_at: t.runAt,
            now: params.now,
            concurrency_key: t.concurrencyKey ?? '',
            locks: JSON.stringify(t.locks ?? []),
          }) as TaskRow;
          return { task: toTask(row), created: true };
        }),
      );
    },

    async taskGet(params) {
      const row = s.byId.get(params.id) as TaskRow | undefined;
      return row && toTask(row);
    },

    async taskList(params) {
      return mapPage(await d.page(lists.taskList(params)), toTask);
    },

    taskClaim(params) {
      return groupCommit.write(() => {
        const agentRow = s.agentById.get(params.agentId) as AgentRow | undefined;
        if (!agentRow) throw notFound('agent', params.agentId);
        // A claim is a sign of life: it counts as a heartbeat. Within a second of the last one the
        // write is skipped; staleness is measured in tens of seconds.
        const fresh = agentRow.status === 'online' && params.now - agentRow.last_heartbeat_at < 1_000;
        const agent = toAgent(fresh ? agentRow : (s.agentHeartbeat.get({ id: params.agentId, now: params.now }) as AgentRow));
        const free = agent.maxConcurrency - (s.inFlight.get(params.agentId) as number);
        const room = Math.min(params.max, free);
        if (room <= 0) return { agent, previousStatus: agentRow.status, tasks: [], room: 0, heldBack: {}, retryAt: null };
        const capabilities = new Set(agent.capabilities);
        const claimable = (s.queuedKeys.all() as string[]).filter((key) => requirementsOf(key).every((c) => capabilities.has(c)));
        const tasks: Task[] = [];
        const lease = (id: number) => {
          const row = s.lease.get({ id, agent_id: params.agentId, now: params.now }) as TaskRow | undefined;
          if (row) tasks.push(toTask(row));
          return row !== undefined;
        };
        if (params.plan && !admission.plain()) {
          // Policies, pauses or concurrency keys: core's plan says which group goes next.
          const groups = admission.groups(claimable);
          const plan = params.plan(admission.state(params.now, groups), groups, params.now);
          // Tasks whose locks are held are passed over, each group's next task considered instead.
          const passed = new Map<QueuedGroup, number>();
          for (let next = plan.next(); next !== undefined && tasks.length < room; next = plan.next()) {
            const head = admission.head(next, passed);
            if (!head) plan.exhausted(next);
            else if (!locksTaken(head.id, plan, params.agentId, params.now)) {
              passed.set(head.group, head.id);
              plan.lockedOut(head.group);
            }
            else if (lease(head.id)) plan.took(head.group);
            else plan.exhausted(next);
          }
          admission.record(plan, params.now);
          return { agent, previousStatus: agentRow.status, tasks, room: free - tasks.length, heldBack: plan.heldBack(), retryAt: plan.retryAt() };
        }
        // SQLite cannot merge several index ranges in priority order under one LIMIT, so the claim
        // seeks each claimable requirement set's index range (few rows each) and merges them here.
        let candidates: { id: number; priority: number }[] = [];
        for (const key of claimable) candidates = candidates.concat(s.claimCandidates.all(key, room) as { id: number; priority: number }[]);
        candidates.sort((a, b) => b.priority - a.priority || a.id - b.id);
        for (const c of candidates.slice(0, room)) lease(c.id);
        return { agent, previousStatus: agentRow.status, tasks, room: free - tasks.length, heldBack: {}, retryAt: null };
      });
    },

    taskComplete(params) {
      // One statement on the happy path; only a refused completion reads the row.
      return groupCommit.write(() =>
        written(
          s.complete.get({ id: params.id, agent_id: params.agentId, result: JSON.stringify(params.result ?? null), now: params.now }) as TaskRow | undefined,
          params.id,
        ),
      );
    },

    taskFail(params) {
      // The rule needs the attempts the row holds: read, decide and write in one write.
      return groupCommit.write(() => {
        const row = s.leasedBy.get(params.id, params.agentId) as TaskRow | undefined;
        if (!row) return written(undefined, params.id);
        return { task: endLeases([row], params.now, params.endLease)[0].task };
      });
    },

    taskRelease(params) {
      return groupCommit.write(() =>
        written(
          s.release.get({
            id: params.id,
            agent_id: params.agentId,
            status: params.status,
            run_at: params.runAt,
            error: JSON.stringify(params.error ?? null),
            now: params.now,
          }) as TaskRow | undefined,
          params.id,
        ),
      );
    },

    taskExtendLease(params) {
      return groupCommit.write(() =>
        written(
          s.extend.get({ id: params.id, agent_id: params.agentId, lease_ms: params.leaseMs ?? null, now: params.now }) as TaskRow | undefined,
          params.id,
        ),
      );
    },

    taskCancel(params) {
      return groupCommit.write(() =>
        written(s.cancel.get({ id: params.id, now: params.now, from: JSON.stringify(params.from) }) as TaskRow | undefined, params.id),
      );
    },

    taskRetry(params) {
      return groupCommit.write(() =>
        written(s.retry.get({ id: params.id, now: params.now, from: JSON.stringify(params.from) }) as TaskRow | undefined, params.id),
      );
    },

    taskRescueExpiredLeases(params) {
      return groupCommit.write(() => endLeases(s.expiredLeases.all(params.now, params.limit) as TaskRow[], params.now, params.endLease));
    },

    taskPromoteScheduled(params) {
      return groupCommit.write(() =>
        (s.dueScheduled.all(params) as TaskRow[]).map((row) => ({ task: toTask(row), from: 'scheduled' as TaskStatus })),
      );
    },

    taskDeleteFinished(params) {
      return groupCommit.write(() => {
        const old = s.deleteFinished.run(params.before, params.limit).changes;
        if (params.keepNewest === undefined || old === params.limit) return old;
        return old + s.deleteFinishedBeyond.run(params.limit - old, params.keepNewest).changes;
      });
    },

    async taskNextDeadlines() {
      return { leaseExpiresAt: s.nextLeaseExpiry.get() as number | null, runAt: s.nextRunAt.get() as number | null };
    },

    async taskCounts() {
      return s.counts.all() as TaskCount[];
    },
  };

  return {
    store,
    endLeasesOf: (agentId, now, endLease) => endLeases(s.leasedTo.all(agentId) as TaskRow[], now, endLease),
  };
}
