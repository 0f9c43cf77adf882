import { dependencyFailedError, notFound } from '../../domain/errors.js';
import type { QueuedGroup } from '../../domain/type-policies.js';
import { canClaim, claimKeysOf, taskRequirementKey } from '../../domain/requirements.js';
import type { TaskWithoutPayload, Task, TaskCount, TaskStatus } from '../../domain/types.js';
import { mapPage } from '../keyset.js';
import * as lists from '../lists.js';
import {
  completedTask,
  taskWithoutPayload,
  columnsWithoutPayload,
  type TaskRowWithoutPayload,
  completionText,
  payloadText,
  countsOfNamespaces,
  dependenciesByTask,
  endingLease,
  leaseEndColumns,
  storedIdempotencyKey,
  toAgent,
  toTask,
  type AgentRow,
  type DependencyRow,
  type TaskRow,
} from '../rows.js';
import {
  CLAIM_BEAT_WRITE_MS,
  TASK_LOCK_TTL_MS,
  taskLockId,
  type ClaimPlan,
  type EndLease,
  type LinkCheck,
  type LockAcquireParams,
  type LockAcquireResult,
  type TaskInsertParams,
  type TaskStore,
  type TaskTransition,
  type TaskWrite,
} from '../store.js';
import { INLINE_PAYLOAD_MAX, type SqliteDatabase } from './database.js';
import type { SqliteAdmission } from './types.js';

/** The tasks area of the SQLite driver, and the lease ending that agents' release shares. */
export function sqliteTasks(d: SqliteDatabase, admission: SqliteAdmission, acquireLock: (params: LockAcquireParams) => LockAcquireResult): {
  store: TaskStore;
  endLeasesOf: (agentId: string, now: number, endLease: EndLease) => TaskTransition[];
  settleDependents: (finished: TaskRow[], now: number) => TaskTransition[];
} {
  const { db, groupCommit } = d;
  const s = {
    // Not taskRows: a long payload's row in task_payloads is written after this, with the id it answers.
    insert: d.rows(`INSERT INTO tasks (namespace, type, req_key, payload, priority, status, idempotency_key, request_hash,
        max_attempts, lease_ms, backoff_ms, run_at, created_at, updated_at, execution_timeout_ms, schedule_timeout_ms, expires_at, tags, metadata,
        concurrency_key, locks)
      VALUES (@namespace, @type, @req_key, @payload, @priority, @status, @idempotency_key, @request_hash,
        @max_attempts, @lease_ms, @backoff_ms, @run_at, @now, @now, @execution_timeout_ms, @schedule_timeout_ms, @expires_at, @tags, @metadata,
        @concurrency_key, @locks) RETURNING *`),
    insertTag: db.prepare('INSERT OR IGNORE INTO task_tags (tag, task_id) VALUES (?, ?)'),
    insertPayload: db.prepare('INSERT INTO task_payloads (task_id, payload) VALUES (?, ?)'),
    byKey: d.taskRows('SELECT * FROM tasks WHERE idempotency_key = ?'),
    byId: d.taskRows('SELECT * FROM tasks WHERE id = ?'),
    locksOf: db.prepare('SELECT namespace, locks FROM tasks WHERE id = ?'),
    queuedKeys: db.prepare("SELECT DISTINCT req_key FROM task_counts WHERE status = 'queued' AND n > 0").pluck(),
    // A task past its expiresAt is never handed out, even before the expirer has swept it.
    claimCandidates: d.withLimit(
      "SELECT id, priority FROM tasks WHERE status = 'queued' AND req_key = @key AND (expires_at IS NULL OR expires_at > @now) ORDER BY priority DESC, id",
    ),
    // The lease never runs past the attempt's execution timeout, whatever extends it.
    lease: d.taskRows(`UPDATE tasks SET status = 'leased', agent_id = @agent_id, attempts = attempts + 1, claim_id = @claim_id,
        claimed_at = @now, updated_at = @now, lease_expires_at = @now + min(lease_ms, coalesce(execution_timeout_ms, lease_ms)), expires_at = NULL
      WHERE id = @id AND status = 'queued' RETURNING *`),
    agentById: d.rows('SELECT * FROM agents WHERE id = ?'),
    agentHeartbeat: d.rows("UPDATE agents SET last_heartbeat_at = @now, status = 'online' WHERE id = @id RETURNING *"),
    inFlight: db.prepare("SELECT count(*) FROM tasks WHERE agent_id = ? AND status = 'leased'").pluck(),
    // Leases ending: what they answer and announce needs no payload (TaskWithoutPayload), so a long one is not read.
    leasedTo: d.rows(`SELECT ${columnsWithoutPayload()} FROM tasks WHERE agent_id = ? AND status = 'leased'`),
    leasedByClaims: d.taskRows("SELECT * FROM tasks WHERE agent_id = ? AND status = 'leased' AND claim_id IN (SELECT value FROM json_each(?))"),
    leasedBy: d.rows(`SELECT ${columnsWithoutPayload()} FROM tasks WHERE id = ? AND status = 'leased' AND agent_id = ?`),
    // Not taskRows: a completion, a release and an extension answer the task without its payload (TaskWithoutPayload), as a lease's end does, so a long one is not read.
    complete: d.rows(`UPDATE tasks SET status = 'completed', result = @result, completed_at = @now,
        updated_at = @now, lease_expires_at = NULL
      WHERE id = @id AND status = 'leased' AND agent_id = @agent_id RETURNING ${columnsWithoutPayload()}`),
    endLease: d.rows(`UPDATE tasks SET status = @status, run_at = coalesce(@run_at, run_at), completed_at = @completed_at,
        error = @error, updated_at = @now, lease_expires_at = NULL WHERE id = @id AND status = 'leased' RETURNING ${columnsWithoutPayload()}`),
    release: d.rows(`UPDATE tasks SET status = @status, run_at = @run_at, attempts = max(0, attempts - 1), error = @error,
        updated_at = @now, lease_expires_at = NULL
      WHERE id = @id AND status = 'leased' AND agent_id = @agent_id RETURNING ${columnsWithoutPayload()}`),
    extend: d.rows(`UPDATE tasks SET updated_at = @now,
        lease_expires_at = min(@now + coalesce(@lease_ms, lease_ms), coalesce(claimed_at + execution_timeout_ms, @now + coalesce(@lease_ms, lease_ms)))
      WHERE id = @id AND status = 'leased' AND agent_id = @agent_id RETURNING ${columnsWithoutPayload()}`),
    cancel: d.taskRows(`UPDATE tasks SET status = 'cancelled', completed_at = @now, updated_at = @now, lease_expires_at = NULL, error = @error
      WHERE id = @id AND status IN (SELECT value FROM json_each(@from)) RETURNING *`),
    retry: d.taskRows(`UPDATE tasks SET status = 'queued', attempts = 0, run_at = @now, updated_at = @now,
        completed_at = NULL, result = NULL, error = NULL, lease_expires_at = NULL
      WHERE id = @id AND status IN (SELECT value FROM json_each(@from)) RETURNING *`),
    expiredLeases: d.rows(`SELECT ${columnsWithoutPayload()} FROM tasks WHERE status = 'leased' AND lease_expires_at <= ? ORDER BY lease_expires_at LIMIT ?`),
    dueScheduled: d.taskRows(
      "UPDATE tasks SET status = 'queued', updated_at = @now WHERE id IN (SELECT id FROM tasks WHERE status = 'scheduled' AND run_at <= @now ORDER BY run_at LIMIT @limit) RETURNING *",
    ),
    deleteFinished: db.prepare('DELETE FROM tasks WHERE id IN (SELECT id FROM tasks WHERE completed_at IS NOT NULL AND completed_at < ? LIMIT ?)'),
    deleteFinishedBeyond: db.prepare(
      'DELETE FROM tasks WHERE id IN (SELECT id FROM tasks WHERE completed_at IS NOT NULL ORDER BY completed_at DESC LIMIT ? OFFSET ?)',
    ),
    nextLeaseExpiry: db.prepare("SELECT min(lease_expires_at) FROM tasks WHERE status = 'leased'").pluck(),
    nextRunAt: db.prepare("SELECT min(run_at) FROM tasks WHERE status = 'scheduled'").pluck(),
    unclaimedExpired: d.taskRows(
      "SELECT * FROM tasks WHERE expires_at <= @now AND expires_at IS NOT NULL AND status IN ('queued', 'scheduled') ORDER BY expires_at LIMIT @limit",
    ),
    expire: d.taskRows(`UPDATE tasks SET status = 'dead', completed_at = @now, updated_at = @now, error = @error, expires_at = NULL
      WHERE id = @id RETURNING *`),
    nextExpiry: db.prepare("SELECT min(expires_at) FROM tasks WHERE expires_at IS NOT NULL AND status IN ('queued', 'scheduled')").pluck(),
    counts: db.prepare('SELECT type, priority, status, sum(n) AS count FROM task_counts WHERE n > 0 GROUP BY type, priority, status'),
    // task_counts knows a group's namespace by its req_key: a filtered count reads it by key.
    countsByKey: db.prepare('SELECT req_key, type, priority, status, sum(n) AS count FROM task_counts WHERE n > 0 GROUP BY req_key, type, priority, status'),
    exists: db.prepare('SELECT 1 FROM tasks WHERE id = ? AND namespace = ?').pluck(),
    linkedDependencies: db.prepare('SELECT id, status, result, error FROM tasks WHERE id IN (SELECT value FROM json_each(?)) AND namespace = ?'),
    setLinks: d.taskRows(`UPDATE tasks SET parent_id = @parent_id, deps_total = @deps_total, deps_pending = @deps_pending,
        on_dependency_failure = @on_dependency_failure,
        completed_at = CASE WHEN status = 'cancelled' THEN @now ELSE completed_at END,
        error = CASE WHEN status = 'cancelled' THEN @error ELSE error END
      WHERE id = @id RETURNING *`),
    insertEdge: db.prepare('INSERT OR IGNORE INTO task_dependencies (task_id, depends_on, status, result, error) VALUES (?, ?, ?, ?, ?)'),
    markDependedOn: db.prepare('UPDATE tasks SET has_dependents = 1 WHERE id IN (SELECT value FROM json_each(?)) AND has_dependents = 0'),
    finishEdges: db.prepare(`UPDATE task_dependencies SET status = @status, result = @result, error = @error
      WHERE depends_on = @depends_on AND status IS NULL RETURNING task_id`).pluck(),
    // The decision core made at submit, carried by the row: a failure cancels the task unless it
    // runs on failures; the last dependency releases it as a new task starts (by its runAt).
    dependencyFinished: d.taskRows(`UPDATE tasks SET deps_pending = deps_pending - 1,
        status = CASE WHEN @failed = 1 AND on_dependency_failure = 'cancel' THEN 'cancelled'
                      WHEN deps_pending > 1 THEN 'waiting'
                      WHEN run_at > @now THEN 'scheduled' ELSE 'queued' END,
        completed_at = CASE WHEN @failed = 1 AND on_dependency_failure = 'cancel' THEN @now ELSE completed_at END,
        error = CASE WHEN @failed = 1 AND on_dependency_failure = 'cancel' THEN @error ELSE error END,
        updated_at = @now
      WHERE id = @id AND status = 'waiting' RETURNING *`),
    dependenciesOf: db.prepare('SELECT * FROM task_dependencies WHERE task_id IN (SELECT value FROM json_each(?))'),
  };

  const FINISHED = new Set(['completed', 'dead', 'cancelled']);
  const failedError = JSON.stringify(dependencyFailedError);

  /**
   * Inside a write that finished these tasks: copies each outcome to the tasks that depend on it
   * and releases those whose wait is over (or cancels them), then does the same for the tasks those
   * cancellations finish. Tasks nothing depends on cost nothing.
   */
  const settleDependents = (finished: TaskRowWithoutPayload[], now: number): TaskTransition[] => {
    const released: TaskTransition[] = [];
    let round: TaskRowWithoutPayload[] = finished.filter((row) => row.has_dependents && FINISHED.has(row.status));
    while (round.length > 0) {
      const next: TaskRow[] = [];
      for (const row of round) {
        const failed = row.status === 'completed' ? 0 : 1;
        const edge = { depends_on: row.id, status: row.status, result: failed ? null : row.result, error: failed ? row.error : null };
        for (const taskId of s.finishEdges.all(edge) as number[]) {
          const dependent = s.dependencyFinished.get({ id: taskId, failed, now, error: failedError }) as TaskRow | undefined;
          if (!dependent || dependent.status === 'waiting') continue;
          released.push({ task: toTask(dependent), from: 'waiting' });
          if (dependent.status === 'cancelled') next.push(dependent);
        }
      }
      round = next.filter((row) => row.has_dependents);
    }
    return released;
  };

  /** Inside the insert: a task's parent and dependencies, as core's rule decides from what exists. */
  const insertLinked = (t: TaskInsertParams, index: number, now: number, onLinks: LinkCheck | undefined, insert: (status: string) => TaskRow): TaskRow => {
    const links = t.links!;
    if (!onLinks) throw new Error('a task with links needs onLinks');
    const parentFound = links.parentId !== null && s.exists.get(links.parentId, t.namespace) !== undefined;
    const deps = links.dependsOn.length > 0 ? (s.linkedDependencies.all(JSON.stringify(links.dependsOn), t.namespace) as TaskRow[]) : [];
    const start = onLinks({ index, parentFound, dependencies: deps.map((d) => ({ id: d.id, status: d.status })) });
    const inserted = insert(start.status);
    const row = s.setLinks.get({
      id: inserted.id,
      parent_id: links.parentId,
      deps_total: links.dependsOn.length,
      deps_pending: start.pending,
      on_dependency_failure: links.onDependencyFailure,
      now,
      error: failedError,
    }) as TaskRow;
    for (const d of deps) {
      const done = FINISHED.has(d.status);
      s.insertEdge.run(row.id, d.id, done ? d.status : null, d.status === 'completed' ? d.result : null, done && d.status !== 'completed' ? d.error : null);
    }
    const open = deps.filter((d) => !FINISHED.has(d.status)).map((d) => d.id);
    if (open.length > 0) s.markDependedOn.run(JSON.stringify(open));
    return row;
  };

  /** Inside a claim's write: takes the task's locks for the agent about to lease it, if it has any; false when they are held. */
  const locksTaken = (id: number, plan: ClaimPlan, agentId: string, now: number): boolean => {
    const row = s.locksOf.get(id) as { namespace: string; locks: string };
    const resources = JSON.parse(row.locks) as string[];
    if (resources.length === 0) return true;
    return acquireLock({
      id: taskLockId(id),
      namespace: row.namespace,
      agentId,
      resources,
      ttlMs: TASK_LOCK_TTL_MS,
      description: `task ${id}`,
      now,
      decide: plan.locks.decide,
      probes: plan.locks.probes(resources),
      line: plan.locks.line(resources),
    }).acquired;
  };

  /** Inside a write: ends the leases of these rows as core's rule decides. */
  const endLeases = (rows: TaskRowWithoutPayload[], now: number, endLease: EndLease): TaskTransition[] => {
    const ended = rows.map((row) => s.endLease.get({ id: row.id, now, ...leaseEndColumns(endLease(endingLease(row)), now) }) as TaskRowWithoutPayload);
    const transitions: TaskTransition[] = ended.map((row, i) => ({ task: taskWithoutPayload(row), from: rows[i].status }));
    return transitions.concat(settleDependents(ended, now));
  };

  /** Inside a write: a conditional write that may have finished a task, with the dependents it released. */
  /** `asTask`: how the finished row becomes the task answered (a completion's without its payload, with the result it was given). */
  const finishing = <R extends TaskRowWithoutPayload, T extends TaskWithoutPayload>(row: R | undefined, id: number, now: number, asTask: (row: R) => T): TaskWrite<T> => {
    if (!row) return refusedWrite(id);
    const released = settleDependents([row], now);
    const task = asTask(row);
    return released.length > 0 ? { task, released } : { task };
  };

  /** Inside a write: the result of a conditional write, as `asTask` makes it (without the payload, for a row read without it), or the task as it is now. */
  const written = <R extends TaskRowWithoutPayload, T extends TaskWithoutPayload>(row: R | undefined, id: number, asTask: (row: R) => T): TaskWrite<T> =>
    row ? { task: asTask(row) } : refusedWrite(id);

  /** A conditional write that did not hold: the task as it is now. */
  const refusedWrite = (id: number): { task: undefined; current: Task | undefined } => {
    const current = s.byId.get(id) as TaskRow | undefined;
    return { task: undefined, current: current && toTask(current) };
  };

  const store: TaskStore = {
    taskInsertMany(params) {
      return groupCommit.write(() =>
        params.tasks.map((t, index) => {
          const idempotencyKey = storedIdempotencyKey(t.namespace, t.idempotencyKey);
          if (idempotencyKey !== null) {
            const existing = s.byKey.get(idempotencyKey) as TaskRow | undefined;
            if (existing) {
              params.onRepeat({ index, existing: { id: existing.id, requestHash: existing.request_hash } });
              return { task: toTask(existing), created: false };
            }
          }
          const payload = payloadText(t);
          const payloadOutside = payload.length > INLINE_PAYLOAD_MAX;
          const insert = (status: string) => {
            const inserted = s.insert.get({
              namespace: t.namespace,
              type: t.type,
              req_key: taskRequirementKey(t),
              payload: payloadOutside ? '' : payload,
              priority: t.priority,
              status,
              idempotency_key: idempotencyKey,
              request_hash: t.requestHash,
              max_attempts: t.maxAttempts,
              lease_ms: t.leaseMs,
              backoff_ms: t.backoffMs,
              run_at: t.runAt,
              execution_timeout_ms: t.executionTimeoutMs,
              schedule_timeout_ms: t.scheduleTimeoutMs,
              expires_at: t.expiresAt,
              tags: JSON.stringify(t.tags),
              metadata: JSON.stringify(t.metadata),
              concurrency_key: t.concurrencyKey ?? '',
              locks: JSON.stringify(t.locks ?? []),
              now: params.now,
            }) as TaskRow;
            if (payloadOutside) {
              s.insertPayload.run(inserted.id, payload);
              inserted.payload = payload;
            }
            return inserted;
          };
          const row = t.links ? insertLinked(t, index, params.now, params.onLinks, insert) : insert(t.status);
          for (const tag of t.tags) s.insertTag.run(tag, row.id);
          return { task: toTask(row), created: true };
        }),
      );
    },

    async taskGet(params) {
      const row = s.byId.get(params.id) as TaskRow | undefined;
      return row && toTask(row);
    },

    async taskList(params) {
      return mapPage(await d.page(lists.taskList(params)), (row) => toTask(d.withPayload(row)));
    },

    taskClaim(params) {
      return groupCommit.write(() => {
        const agentRow = s.agentById.get(params.agentId) as AgentRow | undefined;
        if (!agentRow) throw notFound('agent', params.agentId);
        const fresh = agentRow.status === 'online' && params.now - agentRow.last_heartbeat_at < CLAIM_BEAT_WRITE_MS;
        const agent = toAgent(fresh ? agentRow : (s.agentHeartbeat.get({ id: params.agentId, now: params.now }) as AgentRow));
        const free = agent.maxConcurrency - (s.inFlight.get(params.agentId) as number);
        const room = Math.min(params.max, free);
        if (room <= 0) return { agent, previousStatus: agentRow.status, tasks: [], room: 0, heldBack: {}, retryAt: null };
        const capabilities = new Set(claimKeysOf(agent));
        const claimable = (s.queuedKeys.all() as string[]).filter((key) => canClaim(key, capabilities, agent.namespace));
        const tasks: Task[] = [];
        const lease = (id: number) => {
          const row = s.lease.get({ id, agent_id: params.agentId, now: params.now, claim_id: params.claimId ?? null }) as TaskRow | undefined;
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
            const head = admission.head(next, passed, params.now);
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
        for (const key of claimable) {
          candidates = candidates.concat(s.claimCandidates(room).all({ key, now: params.now }) as { id: number; priority: number }[]);
        }
        candidates.sort((a, b) => b.priority - a.priority || a.id - b.id);
        for (const c of candidates.slice(0, room)) lease(c.id);
        return { agent, previousStatus: agentRow.status, tasks, room: free - tasks.length, heldBack: {}, retryAt: null };
      });
    },

    async taskLeasedByClaims(params) {
      return (s.leasedByClaims.all(params.agentId, JSON.stringify(params.claimIds)) as TaskRow[]).map(toTask);
    },

    taskComplete(params) {
      const result = completionText(params);
      // One statement on the happy path; only a refused completion reads the row.
      return groupCommit.write(() =>
        finishing(s.complete.get({ id: params.id, agent_id: params.agentId, result, now: params.now }) as TaskRowWithoutPayload | undefined, params.id, params.now, (row) => completedTask(row, params)),
      );
    },

    taskFail(params) {
      // The rule needs the attempts the row holds: read, decide and write in one write.
      return groupCommit.write(() => {
        const row = s.leasedBy.get(params.id, params.agentId) as TaskRowWithoutPayload | undefined;
        if (!row) return refusedWrite(params.id);
        const [ended, ...released] = endLeases([row], params.now, params.endLease);
        return released.length > 0 ? { task: ended.task, released } : { task: ended.task };
      });
    },

    taskRelease(params) {
      return groupCommit.write(() => {
        const row = s.release.get({
          id: params.id,
          agent_id: params.agentId,
          status: params.status,
          run_at: params.runAt,
          error: JSON.stringify(params.error ?? null),
          now: params.now,
        }) as TaskRowWithoutPayload | undefined;
        return written(row, params.id, taskWithoutPayload);
      });
    },

    taskExtendLease(params) {
      return groupCommit.write(() => {
        const row = s.extend.get({ id: params.id, agent_id: params.agentId, lease_ms: params.leaseMs ?? null, now: params.now }) as TaskRowWithoutPayload | undefined;
        return written(row, params.id, taskWithoutPayload);
      });
    },

    taskCancel(params) {
      return groupCommit.write(() =>
        finishing(s.cancel.get({ id: params.id, now: params.now, from: JSON.stringify(params.from), error: JSON.stringify(params.error ?? null) }) as TaskRow | undefined, params.id, params.now, toTask),
      );
    },

    taskRetry(params) {
      return groupCommit.write(() =>
        written(s.retry.get({ id: params.id, now: params.now, from: JSON.stringify(params.from) }) as TaskRow | undefined, params.id, toTask),
      );
    },

    taskRescueExpiredLeases(params) {
      return groupCommit.write(() => endLeases(s.expiredLeases.all(params.now, params.limit) as TaskRowWithoutPayload[], params.now, params.endLease));
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

    async taskCounts(params) {
      const namespaces = params?.namespaces;
      if (namespaces === undefined && !params?.byNamespace) return s.counts.all() as TaskCount[];
      return countsOfNamespaces(s.countsByKey.all() as (TaskCount & { req_key: string })[], namespaces, params?.byNamespace ?? false);
    },

    taskExpireUnclaimed(params) {
      return groupCommit.write(() => {
        const error = JSON.stringify(params.error ?? null);
        const expired = (s.unclaimedExpired.all({ now: params.now, limit: params.limit }) as TaskRow[]).map((row) => ({
          row: s.expire.get({ id: row.id, now: params.now, error }) as TaskRow,
          from: row.status,
        }));
        const transitions: TaskTransition[] = expired.map(({ row, from }) => ({ task: toTask(row), from }));
        // Tasks waiting on an expired one are cancelled (or run anyway) in the same write.
        return transitions.concat(settleDependents(expired.map((e) => e.row), params.now));
      });
    },

    async taskNextExpiry() {
      return s.nextExpiry.get() as number | null;
    },

    async taskDependencies(params) {
      if (params.ids.length === 0) return new Map();
      return dependenciesByTask(s.dependenciesOf.all(JSON.stringify(params.ids)) as DependencyRow[]);
    },
  };

  return {
    store,
    endLeasesOf: (agentId, now, endLease) => endLeases(s.leasedTo.all(agentId) as TaskRowWithoutPayload[], now, endLease),
    settleDependents,
  };
}
