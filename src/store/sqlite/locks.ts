import type { Lock } from '../../domain/types.js';
import { mapPage } from '../keyset.js';
import * as lists from '../lists.js';
import { toLock, type LockRow } from '../rows.js';
import type { LockAcquireParams, LockAcquireResult, LockHolder, LockStore } from '../store.js';
import type { SqliteDatabase } from './database.js';

/** The locks area of the SQLite driver, and the dropping of an agent's locks that its release shares. */
export function sqliteLocks(d: SqliteDatabase): {
  store: LockStore;
  dropLocksOf: (agentId: string) => Lock[];
  /** Inside a write: takes a lock as `lockAcquire` does, its line included (a claim takes a task's locks with its lease). */
  acquireIn: (params: LockAcquireParams) => LockAcquireResult;
} {
  const { db, groupCommit } = d;
  const s = {
    holder: db.prepare(`SELECT lr.resource, l.id AS lockId, l.agent_id AS agentId, l.expires_at AS expiresAt FROM lock_resources lr
        JOIN locks l ON l.seq = lr.lock_seq WHERE lr.namespace = ? AND lr.resource = ?`),
    under: db.prepare(`SELECT lr.resource, l.id AS lockId, l.agent_id AS agentId, l.expires_at AS expiresAt FROM lock_resources lr
        JOIN locks l ON l.seq = lr.lock_seq WHERE lr.namespace = @namespace AND lr.resource > @dir AND lr.resource < @end`),
    renew: db.prepare(`UPDATE locks SET expires_at = @expires_at WHERE id = @id AND expires_at > @now
        AND (@holder IS NULL OR agent_id = @holder) RETURNING *`),
    insert: db.prepare(`INSERT INTO locks (id, namespace, agent_id, resources, description, created_at, expires_at)
        VALUES (@id, @namespace, @agent_id, @resources, @description, @now, @expires_at) RETURNING *`),
    resourceInsert: db.prepare('INSERT INTO lock_resources (namespace, resource, lock_seq) VALUES (?, ?, ?)'),
    byId: db.prepare('SELECT * FROM locks WHERE id = ?'),
    release: db.prepare('DELETE FROM locks WHERE id = @id AND (@holder IS NULL OR agent_id = @holder) RETURNING *'),
    ofAgent: db.prepare('DELETE FROM locks WHERE agent_id = ? RETURNING *'),
    expired: db.prepare('DELETE FROM locks WHERE seq IN (SELECT seq FROM locks WHERE expires_at <= ? ORDER BY expires_at LIMIT ?) RETURNING *'),
    nextExpiry: db.prepare('SELECT min(expires_at) FROM locks').pluck(),
    waitJoin: db.prepare('INSERT INTO lock_waiters (namespace, resources, deadline) VALUES (?, ?, ?) RETURNING seq').pluck(),
    waitPrune: db.prepare('DELETE FROM lock_waiters WHERE deadline <= ?'),
    waitLeave: db.prepare('DELETE FROM lock_waiters WHERE seq = ?'),
    ahead: db.prepare('SELECT seq, resources, deadline FROM lock_waiters WHERE namespace = ? AND seq < ? AND deadline > ? ORDER BY seq'),
  };

  /** Whether the requests ahead in line let this one go (inside the write). */
  function lineLetsGo(params: LockAcquireParams): boolean {
    if (!params.line) return true;
    const ahead = (s.ahead.all(params.namespace, params.line.seq, params.now) as { seq: number; resources: string; deadline: number }[]).map((w) => ({
      seq: w.seq,
      resources: JSON.parse(w.resources) as string[],
      deadline: w.deadline,
    }));
    return params.line.mayGo(ahead);
  }

  /** Inside a write (one writer: holders read cannot change before it commits). */
  function acquireIn(params: LockAcquireParams): LockAcquireResult {
    if (!lineLetsGo(params)) return { acquired: false, conflicts: [] };
    const probes = params.probes ?? { exact: params.resources, under: [] };
    const holders = probes.exact.map((r) => s.holder.get(params.namespace, r) as LockHolder | undefined).filter((h) => h !== undefined);
    // Everything below a directory: the names between "dir/" and "dir0" ('0' follows '/'), by the index.
    const seen = new Set(holders.map((h) => h.resource));
    for (const dir of probes.under) {
      for (const h of s.under.all({ namespace: params.namespace, dir, end: `${dir.slice(0, -1)}0` }) as LockHolder[]) {
        if (seen.has(h.resource)) continue;
        seen.add(h.resource);
        holders.push(h);
      }
    }
    const decision = params.decide(holders);
    if (!decision.acquire) return { acquired: false, conflicts: decision.conflicts };
    for (const id of decision.replace) s.release.run({ id, holder: null });
    const row = s.insert.get({
      id: params.id,
      namespace: params.namespace,
      agent_id: params.agentId,
      resources: JSON.stringify(params.resources),
      description: params.description,
      now: params.now,
      expires_at: params.now + params.ttlMs,
    }) as LockRow;
    for (const resource of params.resources) s.resourceInsert.run(params.namespace, resource, row.seq);
    return { acquired: true, lock: toLock(row) };
  }

  const store: LockStore = {
    lockAcquire(params) {
      return groupCommit.write(() => {
        const result = acquireIn(params);
        if (result.acquired && params.line) s.waitLeave.run(params.line.seq);
        return result;
      });
    },

    lockWaitJoin(params) {
      return groupCommit.write(() => {
        s.waitPrune.run(params.now);
        return s.waitJoin.get(params.namespace, JSON.stringify(params.resources), params.deadline) as number;
      });
    },

    lockWaitLeave(params) {
      return groupCommit.write(() => {
        s.waitLeave.run(params.seq);
      });
    },

    lockRelease(params) {
      return groupCommit.write(() => {
        const row = s.release.get({ id: params.id, holder: params.holder ?? null }) as LockRow | undefined;
        if (row) return { released: toLock(row) };
        const current = s.byId.get(params.id) as LockRow | undefined;
        return { released: undefined, current: current && toLock(current) };
      });
    },

    async lockGet(params) {
      const row = s.byId.get(params.id) as LockRow | undefined;
      return row && toLock(row);
    },

    lockRenew(params) {
      return groupCommit.write(() => {
        const row = s.renew.get({ id: params.id, holder: params.holder ?? null, expires_at: params.expiresAt, now: params.now }) as LockRow | undefined;
        if (row) return { renewed: toLock(row) };
        const current = s.byId.get(params.id) as LockRow | undefined;
        return { renewed: undefined, current: current && toLock(current) };
      });
    },

    async lockList(params) {
      return mapPage(await d.page(lists.lockList(params)), toLock);
    },

    lockExpire(params) {
      return groupCommit.write(() => (s.expired.all(params.now, params.limit) as LockRow[]).map(toLock));
    },

    async lockNextExpiry() {
      return s.nextExpiry.get() as number | null;
    },
  };

  return { store, dropLocksOf: (agentId) => (s.ofAgent.all(agentId) as LockRow[]).map(toLock), acquireIn };
}
