import type { AgentCount, AgentStatus, Lock } from '../../domain/types.js';
import { mapPage } from '../keyset.js';
import * as lists from '../lists.js';
import { columnsWithoutPayload, toAgent, type AgentRow, type TaskRowWithoutPayload } from '../rows.js';
import type { AgentReleaseResult, AgentStore, EndLease, TaskTransition } from '../store.js';
import type { PostgresDatabase, Query } from './database.js';

/** What taking agents offline asks of the other areas, inside the same transaction. */
export interface AgentRelease {
  endLeases(q: Query, rows: TaskRowWithoutPayload[], now: number, endLease: EndLease): Promise<TaskTransition[]>;
  dropLocksOf(q: Query, agentIds: string[]): Promise<Lock[]>;
}

/** The agents area of the PostgreSQL driver. */
export function postgresAgents(db: PostgresDatabase, release: AgentRelease): AgentStore {
  const query: Query = (text, values) => db.query(text, values);

  /** Inside a transaction: every lease the agents hold ends by core's rule, every lock they hold goes. */
  async function releaseAgents(q: Query, agentIds: string[], now: number, endLease: EndLease): Promise<(agentId: string) => Omit<AgentReleaseResult, 'agent'>> {
    const leased = await q<TaskRowWithoutPayload>(
      `SELECT ${columnsWithoutPayload()} FROM tasks WHERE agent_id = ANY($1::text[]) AND status = 'leased' ORDER BY id FOR UPDATE`,
      [agentIds],
    );
    const tasks = await release.endLeases(q, leased, now, endLease);
    const locks = await release.dropLocksOf(q, agentIds);
    return (agentId) => ({
      tasks: tasks.filter((t) => t.task.agentId === agentId),
      locks: locks.filter((l) => l.agentId === agentId),
    });
  }

  return {
    async agentCreateMany(params) {
      const rows = await query<AgentRow>(
        `INSERT INTO agents (id, namespace, name, capabilities, labels, max_concurrency, token_hash, status, created_at, last_heartbeat_at)
         SELECT id, namespace, name, ARRAY(SELECT jsonb_array_elements_text(caps::jsonb)), labels, max_concurrency, token_hash, 'online', now, now
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::text[], $7::bigint[], $8::text[]) WITH ORDINALITY
           AS i(id, name, caps, labels, max_concurrency, token_hash, now, namespace, ord)
         ORDER BY ord RETURNING *`,
        [
          params.map((p) => p.id),
          params.map((p) => p.name),
          params.map((p) => JSON.stringify(p.capabilities)),
          params.map((p) => JSON.stringify(p.labels)),
          params.map((p) => p.maxConcurrency),
          params.map((p) => p.tokenHash),
          params.map((p) => p.now),
          params.map((p) => p.namespace),
        ],
      );
      return rows.sort((a, b) => a.seq - b.seq).map(toAgent);
    },

    async agentGet(params) {
      const [row] = await query<AgentRow>('SELECT * FROM agents WHERE id = $1', [params.id]);
      return row && toAgent(row);
    },

    async agentByTokenHash(params) {
      const [row] = await query<{ id: string; namespace: string }>('SELECT id, namespace FROM agents WHERE token_hash = $1', [params.hash]);
      return row;
    },

    async agentList(params) {
      const byCapability = { from: 'agents a', condition: 'a.capabilities @> ARRAY[?]::text[]' };
      return mapPage(await db.page(lists.agentList(params, byCapability)), toAgent);
    },

    async agentHeartbeat(params) {
      const [row] = await query<AgentRow & { previous_status: AgentStatus }>(
        `WITH old AS (SELECT id, status FROM agents WHERE id = $1 FOR UPDATE)
         UPDATE agents a SET last_heartbeat_at = $2, status = 'online' FROM old WHERE a.id = old.id
         RETURNING a.*, old.status AS previous_status`,
        [params.id, params.now],
      );
      return row && { agent: toAgent(row), previousStatus: row.previous_status };
    },

    async agentTouchMany(params) {
      if (params.seen.length === 0) return [];
      // Rows locked in id order, as claims lock them, so that the two cannot deadlock.
      const touched = await query<{ id: string }>(
        `WITH seen AS (SELECT * FROM unnest($1::text[], $2::bigint[]) AS u(id, at)),
           locked AS (SELECT a.id FROM agents a JOIN seen ON seen.id = a.id WHERE a.status = 'online' ORDER BY a.id FOR UPDATE OF a)
         UPDATE agents a SET last_heartbeat_at = greatest(a.last_heartbeat_at, seen.at)
         FROM locked JOIN seen ON seen.id = locked.id WHERE a.id = locked.id AND a.status = 'online' RETURNING a.id`,
        [params.seen.map((s) => s.id), params.seen.map((s) => s.at)],
      );
      const done = new Set(touched.map((r) => r.id));
      return params.seen.filter((s) => !done.has(s.id)).map((s) => s.id);
    },

    async agentMarkStale(params) {
      const rows = await query<{ id: string }>(
        `UPDATE agents SET status = 'stale' WHERE seq IN (SELECT seq FROM agents
           WHERE status = 'online' AND last_heartbeat_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING id`,
        [params.staleBefore, params.limit],
      );
      return rows.map((r) => r.id);
    },

    agentReapOffline(params) {
      return db.transaction(async (q) => {
        const agents = await q<AgentRow>(
          `UPDATE agents SET status = 'offline' WHERE seq IN (SELECT seq FROM agents
             WHERE status IN ('online', 'stale') AND last_heartbeat_at < $1
             ORDER BY last_heartbeat_at LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING *`,
          [params.offlineBefore, params.limit],
        );
        if (agents.length === 0) return [];
        const released = await releaseAgents(q, agents.map((a) => a.id), params.now, params.endLease);
        return agents.sort((a, b) => a.last_heartbeat_at - b.last_heartbeat_at).map((row) => ({ agent: toAgent(row), ...released(row.id) }));
      });
    },

    agentDelete(params) {
      return db.transaction(async (q) => {
        const [row] = await q<AgentRow>('DELETE FROM agents WHERE id = $1 RETURNING *', [params.id]);
        if (!row) return undefined;
        const released = await releaseAgents(q, [row.id], params.now, params.endLease);
        return { agent: toAgent(row), ...released(row.id) };
      });
    },

    agentRelease(params) {
      return db.transaction(async (q) => {
        // The row lock orders this with a welcome's heartbeat on another node: whichever comes second sees the first.
        const [row] = await q<AgentRow>("UPDATE agents SET status = 'offline' WHERE id = $1 AND last_heartbeat_at <= $2 RETURNING *", [params.id, params.unlessSeenAfter]);
        if (!row) return undefined;
        const released = await releaseAgents(q, [row.id], params.now, params.endLease);
        return { agent: toAgent(row), ...released(row.id) };
      });
    },

    async agentOldestHeartbeat(params) {
      const [row] = await query<{ t: number | null }>('SELECT min(last_heartbeat_at) AS t FROM agents WHERE status = $1', [params.status]);
      return row.t;
    },

    async agentCounts(params) {
      const namespaces = params?.namespaces;
      if (namespaces === undefined) return query<AgentCount>('SELECT status, n AS count FROM agent_counts');
      // agent_counts keeps all namespaces together; a filtered count reads the agents themselves.
      return query<AgentCount>('SELECT status, count(*)::int AS count FROM agents WHERE namespace = ANY($1::text[]) GROUP BY status', [namespaces]);
    },
  };
}
