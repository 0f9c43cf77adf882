import type { AgentCount, Lock } from '../../domain/types.js';
import { mapPage, whereOf } from '../keyset.js';
import * as lists from '../lists.js';
import { toAgent, type AgentRow } from '../rows.js';
import type { AgentStore, EndLease, TaskTransition } from '../store.js';
import type { SqliteDatabase } from './database.js';

/** What taking an agent offline asks of the other areas, inside the same write. */
export interface AgentRelease {
  endLeasesOf(agentId: string, now: number, endLease: EndLease): TaskTransition[];
  dropLocksOf(agentId: string): Lock[];
}

/** The agents area of the SQLite driver. */
export function sqliteAgents(d: SqliteDatabase, release: AgentRelease): AgentStore {
  const { db, groupCommit } = d;
  const s = {
    insert: db.prepare(`INSERT INTO agents (id, namespace, name, capabilities, labels, max_concurrency, token_hash, status,
        created_at, last_heartbeat_at) VALUES (@id, @namespace, @name, @capabilities, @labels, @max_concurrency, @token_hash,
        'online', @now, @now) RETURNING *`),
    capabilityInsert: db.prepare('INSERT OR IGNORE INTO agent_capabilities (capability, agent_seq) VALUES (?, ?)'),
    byId: db.prepare('SELECT * FROM agents WHERE id = ?'),
    heartbeat: db.prepare("UPDATE agents SET last_heartbeat_at = @now, status = 'online' WHERE id = @id RETURNING *"),
    touch: db.prepare("UPDATE agents SET last_heartbeat_at = max(last_heartbeat_at, @at) WHERE id = @id AND status = 'online'"),
    markStale: db.prepare(`UPDATE agents SET status = 'stale' WHERE seq IN (SELECT seq FROM agents
        WHERE status = 'online' AND last_heartbeat_at < @before LIMIT @limit) RETURNING id`).pluck(),
    toReap: db.prepare(`SELECT * FROM agents WHERE status IN ('online', 'stale') AND last_heartbeat_at < ?
        ORDER BY last_heartbeat_at LIMIT ?`),
    setOffline: db.prepare("UPDATE agents SET status = 'offline' WHERE id = ? RETURNING *"),
    delete: db.prepare('DELETE FROM agents WHERE id = ?'),
    oldestHeartbeat: db.prepare('SELECT min(last_heartbeat_at) FROM agents WHERE status = ?').pluck(),
    counts: db.prepare('SELECT status, n AS count FROM agent_counts'),
    byTokenHash: db.prepare('SELECT id, namespace FROM agents WHERE token_hash = ?'),
  };

  /** Inside a write: the agent's leases end, its locks go. */
  const releaseAgent = (agentId: string, now: number, endLease: EndLease) => ({
    tasks: release.endLeasesOf(agentId, now, endLease),
    locks: release.dropLocksOf(agentId),
  });

  return {
    agentCreateMany(params) {
      return groupCommit.write(() =>
        params.map((p) => {
          const row = s.insert.get({
            id: p.id,
            namespace: p.namespace,
            name: p.name,
            capabilities: JSON.stringify(p.capabilities),
            labels: JSON.stringify(p.labels),
            max_concurrency: p.maxConcurrency,
            token_hash: p.tokenHash,
            now: p.now,
          }) as AgentRow;
          for (const c of p.capabilities) s.capabilityInsert.run(c, row.seq);
          return toAgent(row);
        }),
      );
    },

    async agentGet(params) {
      const row = s.byId.get(params.id) as AgentRow | undefined;
      return row && toAgent(row);
    },

    async agentByTokenHash(params) {
      return s.byTokenHash.get(params.hash) as { id: string; namespace: string } | undefined;
    },

    async agentList(params) {
      const byCapability = { from: 'agent_capabilities c JOIN agents a ON a.seq = c.agent_seq', condition: 'c.capability = ?' };
      return mapPage(await d.page(lists.agentList(params, byCapability)), toAgent);
    },

    agentHeartbeat(params) {
      return groupCommit.write(() => {
        const before = s.byId.get(params.id) as AgentRow | undefined;
        if (!before) return undefined;
        return { agent: toAgent(s.heartbeat.get(params) as AgentRow), previousStatus: before.status };
      });
    },

    agentTouchMany(params) {
      return groupCommit.write(() => params.seen.filter((seen) => s.touch.run(seen).changes === 0).map((seen) => seen.id));
    },

    agentMarkStale(params) {
      return groupCommit.write(() => s.markStale.all({ before: params.staleBefore, limit: params.limit }) as string[]);
    },

    agentReapOffline(params) {
      return groupCommit.write(() =>
        (s.toReap.all(params.offlineBefore, params.limit) as AgentRow[]).map((row) => {
          const released = releaseAgent(row.id, params.now, params.endLease);
          return { agent: toAgent(s.setOffline.get(row.id) as AgentRow), ...released };
        }),
      );
    },

    agentDelete(params) {
      return groupCommit.write(() => {
        const row = s.byId.get(params.id) as AgentRow | undefined;
        if (!row) return undefined;
        const released = releaseAgent(row.id, params.now, params.endLease);
        s.delete.run(row.id);
        return { agent: toAgent(row), ...released };
      });
    },

    agentRelease(params) {
      return groupCommit.write(() => {
        const row = s.byId.get(params.id) as AgentRow | undefined;
        if (!row || row.last_heartbeat_at > params.unlessSeenAfter) return undefined;
        const released = releaseAgent(row.id, params.now, params.endLease);
        return { agent: toAgent(s.setOffline.get(row.id) as AgentRow), ...released };
      });
    },

    async agentOldestHeartbeat(params) {
      return s.oldestHeartbeat.get(params.status) as number | null;
    },

    async agentCounts(params) {
      const namespaces = params?.namespaces;
      if (namespaces === undefined) return s.counts.all() as AgentCount[];
      // agent_counts keeps all namespaces together; a filtered count reads the agents themselves.
      const { conditions, values } = whereOf([['namespace IN (?)', namespaces]]);
      return d.statement(`SELECT status, count(*) AS count FROM agents WHERE ${conditions.join(' AND ')} GROUP BY status`).all(...values) as AgentCount[];
    },
  };
}
