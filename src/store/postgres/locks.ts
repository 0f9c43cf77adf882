import type { Lock } from '../../domain/types.js';
import { mapPage } from '../keyset.js';
import * as lists from '../lists.js';
import { toLock, type LockRow } from '../rows.js';
import type { LockAcquireParams, LockAcquireResult, LockHolder, LockStore } from '../store.js';
import { UNIQUE_VIOLATION, type PostgresDatabase, type Query } from './database.js';

/** The locks area of the PostgreSQL driver, and the dropping of agents' locks that their release shares. */
export function postgresLocks(db: PostgresDatabase): {
  store: LockStore;
  dropLocksOf: (q: Query, agentIds: string[]) => Promise<Lock[]>;
  /** Inside a transaction: takes a lock as `lockAcquire` does (a claim takes a task's locks with its lease). */
  acquireIn: (q: Query, params: LockAcquireParams) => Promise<LockAcquireResult>;
} {
  const query: Query = (text, values) => db.query(text, values);

  /**
   * Inside a transaction. Two nodes racing for the same free resource both find no holder; the
   * second then fails on the resource's primary key, and running it again finds the first as the
   * holder: a conflict.
   */
  async function acquireIn(q: Query, params: LockAcquireParams): Promise<LockAcquireResult> {
    if (params.line) {
      const ahead = await q<{ seq: string; resources: string[]; deadline: string }>(
        'SELECT seq, resources, deadline FROM lock_waiters WHERE namespace = $3 AND seq < $1 AND deadline > $2 ORDER BY seq',
        [params.line.seq, params.now, params.namespace],
      );
      if (!params.line.mayGo(ahead.map((w) => ({ seq: Number(w.seq), resources: w.resources, deadline: Number(w.deadline) })))) {
        return { acquired: false, conflicts: [] };
      }
    }
    const probes = params.probes ?? { exact: params.resources, under: [], roots: [] };
    // A directory and a file below it have no row in common to lock: acquirers under the same
    // first segment of one namespace take turns (in sorted order, so that two cannot wait on each other).
    for (const root of probes.roots) await q('SELECT pg_advisory_xact_lock(hashtext($1))', [`fleetd-lock:${db.schema}:${params.namespace}:${root}`]);
    const found = await q<LockHolder>(
      `SELECT lr.resource, l.id AS "lockId", l.agent_id AS "agentId", l.expires_at AS "expiresAt" FROM lock_resources lr
       JOIN locks l ON l.seq = lr.lock_seq
       WHERE lr.namespace = $3
         AND (lr.resource = ANY($1::text[]) OR EXISTS (SELECT 1 FROM unnest($2::text[]) AS d(dir) WHERE left(lr.resource, length(d.dir)) = d.dir))
       FOR UPDATE OF l`,
      [probes.exact, probes.under, params.namespace],
    );
    const byResource = new Map(found.map((h) => [h.resource, h]));
    const order = [...probes.exact, ...found.map((h) => h.resource).filter((r) => !probes.exact.includes(r)).sort()];
    const decision = params.decide([...new Set(order)].flatMap((r) => byResource.get(r) ?? []));
    if (!decision.acquire) return { acquired: false, conflicts: decision.conflicts };
    if (decision.replace.length > 0) await q('DELETE FROM locks WHERE id = ANY($1::text[])', [decision.replace]);
    const [row] = await q<LockRow>(
      `INSERT INTO locks (id, namespace, agent_id, resources, description, created_at, expires_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *`,
      [params.id, params.namespace, params.agentId, JSON.stringify(params.resources), params.description, params.now, params.now + params.ttlMs],
    );
    await q('INSERT INTO lock_resources (namespace, resource, lock_seq) SELECT $3, unnest($1::text[]), $2', [params.resources, row.seq, params.namespace]);
    return { acquired: true, lock: toLock(row) };
  }

  const store: LockStore = {
    lockAcquire(params) {
      return db.transaction(async (q) => {
        const result = await acquireIn(q, params);
        if (result.acquired && params.line) await q('DELETE FROM lock_waiters WHERE seq = $1', [params.line.seq]);
        return result;
      }, [UNIQUE_VIOLATION]);
    },

    async lockWaitJoin(params) {
      await query('DELETE FROM lock_waiters WHERE deadline <= $1', [params.now]);
      const [row] = await query<{ seq: string }>('INSERT INTO lock_waiters (namespace, resources, deadline) VALUES ($1, $2, $3) RETURNING seq', [
        params.namespace,
        JSON.stringify(params.resources),
        params.deadline,
      ]);
      return Number(row.seq);
    },

    async lockWaitLeave(params) {
      await query('DELETE FROM lock_waiters WHERE seq = $1', [params.seq]);
    },

    async lockRelease(params) {
      const [row] = await query<LockRow>('DELETE FROM locks WHERE id = $1 AND ($2::text IS NULL OR agent_id = $2) RETURNING *', [
        params.id,
        params.holder ?? null,
      ]);
      if (row) return { released: toLock(row) };
      return { released: undefined, current: await store.lockGet({ id: params.id }) };
    },

    async lockGet(params) {
      const [row] = await query<LockRow>('SELECT * FROM locks WHERE id = $1', [params.id]);
      return row && toLock(row);
    },

    async lockRenew(params) {
      const [row] = await query<LockRow>(
        'UPDATE locks SET expires_at = $3 WHERE id = $1 AND expires_at > $4 AND ($2::text IS NULL OR agent_id = $2) RETURNING *',
        [params.id, params.holder ?? null, params.expiresAt, params.now],
      );
      if (row) return { renewed: toLock(row) };
      return { renewed: undefined, current: await store.lockGet({ id: params.id }) };
    },

    async lockList(params) {
      return mapPage(await db.page(lists.lockList(params)), toLock);
    },

    async lockExpire(params) {
      const rows = await query<LockRow>(
        `DELETE FROM locks WHERE seq IN (
           SELECT seq FROM locks WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED
         ) RETURNING *`,
        [params.now, params.limit],
      );
      return rows.sort((a, b) => a.expires_at - b.expires_at || a.seq - b.seq).map(toLock);
    },

    async lockNextExpiry() {
      const [row] = await query<{ t: number | null }>('SELECT min(expires_at) AS t FROM locks');
      return row.t;
    },
  };

  return {
    store,
    acquireIn,
    async dropLocksOf(q, agentIds) {
      const rows = await q<LockRow>('DELETE FROM locks WHERE agent_id = ANY($1::text[]) RETURNING *', [agentIds]);
      return rows.sort((a, b) => a.seq - b.seq).map(toLock);
    },
  };
}
