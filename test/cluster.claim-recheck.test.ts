import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import pg from 'pg';
import { clusterEnv, startNode, type NodeProcess } from './cluster/node-process.js';
import { TEST_DATABASE_URL, dropSchema } from './store/postgres.js';

/**
 * A claim on PostgreSQL skips the rows another transaction has locked (another node's claim, here a
 * test's own transaction). When that transaction ends without leasing them, nothing is notified:
 * the waiting claim gets them from the node's periodic recheck (FLEETD_CLAIM_RECHECK_MS).
 */
describe('a claim that skipped locked rows, on PostgreSQL', { timeout: 60_000 }, () => {
  it('gets them once they are free, with no new task announced', async (t) => {
    const { FLEETD_REDIS_URL: _redis, FLEETD_REDIS_PREFIX: _prefix, ...env } = clusterEnv();
    const schema = env.FLEETD_DATABASE_SCHEMA;
    let node: NodeProcess | undefined;
    const locker = new pg.Client({ connectionString: TEST_DATABASE_URL });
    try {
      node = await startNode({ ...env, FLEETD_CLAIM_RECHECK_MS: '200' });
      await locker.connect();
      const agent = await node.api.registerAgent(['recheck']);
      const submitted = await node.api.submit({ type: 'recheck', payload: { n: 1 } });
      await locker.query('BEGIN');
      await locker.query(`SELECT id FROM ${schema}.tasks WHERE id = $1 FOR UPDATE`, [submitted.id]);
      // The long-poll's claim skips the locked row, finds nothing and waits (if it ran only after
      // the commit below, it would find the task at once: the test would pass without showing anything).
      const claim = node.api.claim(agent.id, 1, 20_000);
      await new Promise((r) => setTimeout(r, 1_000));
      await locker.query('COMMIT');
      const freedAt = Date.now();
      const [got] = await claim;
      assert.equal(got?.id, submitted.id, 'the waiting long-poll got the task once its row was free');
      t.diagnostic(`got it ${Date.now() - freedAt} ms after the row was freed`);
    } finally {
      await locker.end();
      await node?.stop();
      await dropSchema(schema);
    }
  });
});
