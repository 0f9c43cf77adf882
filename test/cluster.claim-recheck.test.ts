import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import pg from 'pg';
import { claimKeysOf } from '../src/domain/requirements.js';
import { CLAIM_TICK_FUNCTION } from '../src/store/postgres/tasks.js';
import { clusterEnv, startNode, type NodeProcess } from './cluster/node-process.js';
import { eventually } from './helpers.js';
import { TEST_DATABASE_URL, dropSchema } from './store/postgres.js';

/**
 * A claim on PostgreSQL skips the rows another transaction has locked (another node's claim, here a
 * test's own transaction). When a claim locked rows it did not lease, it announces them at its
 * commit; any other transaction that ends without leasing them notifies nothing, and the waiting
 * claim gets them from the node's periodic recheck (FLEETD_CLAIM_RECHECK_MS).
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

  it('gets the rows another claim locked and did not lease at once, without the recheck', async () => {
    const { FLEETD_REDIS_URL: _redis, FLEETD_REDIS_PREFIX: _prefix, ...env } = clusterEnv();
    const schema = env.FLEETD_DATABASE_SCHEMA;
    let node: NodeProcess | undefined;
    const claimer = new pg.Client({ connectionString: TEST_DATABASE_URL });
    const listener = new pg.Client({ connectionString: TEST_DATABASE_URL });
    try {
      node = await startNode({ ...env, FLEETD_CLAIM_RECHECK_MS: '0' });
      await claimer.connect();
      await listener.connect();
      const announced: { node: string; byRequirement: Record<string, number> }[] = [];
      listener.on('notification', (n) => {
        const payload = JSON.parse(n.payload ?? '{}');
        if (payload.schema === schema) announced.push(payload);
      });
      await listener.query('LISTEN fleetd_tasks_available');
      // X may take tasks of two keys, with room for one: its claim locks the best of each and leases one.
      const x = await node.api.registerAgent(['a', 'b'], { maxConcurrency: 1 });
      const y = await node.api.registerAgent(['b']);
      const best = await node.api.submit({ type: 'unleased', requires: ['a'], priority: 5 });
      const other = await node.api.submit({ type: 'unleased', requires: ['b'] });
      // X's claim as a node makes it, in a transaction of the test's that stays open for a while.
      await claimer.query(`SET search_path TO ${schema}`);
      await claimer.query('BEGIN');
      const claim = { agentId: x.id, max: 1, now: Date.now(), claimId: null, maxConcurrency: 1, namespace: null, keys: claimKeysOf({ id: x.id, namespace: 'default', capabilities: ['a', 'b'] }) };
      const {
        rows: [{ claimed }],
      } = await claimer.query(`SELECT claimed FROM ${CLAIM_TICK_FUNCTION.name}($1::text[], $2::bigint, $3::jsonb)`, [[x.id], claim.now, JSON.stringify([claim])]);
      assert.deepEqual(
        claimed[0].leased_tasks.map((t: { id: number }) => Number(t.id)),
        [best.id],
        'X leased the best task, and holds the other locked',
      );
      // Y's long-poll skips the locked row, finds nothing and waits: no task is announced after it.
      const waiting = node.api.claim(y.id, 1, 8_000);
      waiting.catch(() => {});
      await new Promise((r) => setTimeout(r, 1_000));
      announced.length = 0;
      await claimer.query('COMMIT');
      const freedAt = Date.now();
      const [got] = await waiting;
      assert.equal(got?.id, other.id, 'the waiting long-poll got the task X locked and left, with no recheck to find it');
      assert.ok(Date.now() - freedAt < 4_000, `got it ${Date.now() - freedAt} ms after the commit`);
      // What woke it: X's commit announced the row it locked and left, to every node (its own too).
      await eventually(() => announced.some((a) => a.node === ''), 2_000, 'the announcement on a connection of the test');
      assert.deepEqual(
        announced.filter((a) => a.node === ''),
        [{ schema, node: '', byRequirement: { b: 1 } }],
      );
    } finally {
      await listener.end();
      await claimer.end();
      await node?.stop();
      await dropSchema(schema);
    }
  });
});
