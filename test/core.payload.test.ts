import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LocalBus } from '../src/bus/local-bus.js';
import { resolveConfig } from '../src/config.js';
import { Fleet } from '../src/core/fleet.js';
import { FleetError } from '../src/domain/errors.js';
import { openSqlite } from '../src/store/sqlite/driver.js';

/** A fleet in this process, on an in-memory SQLite store: what pipelines, schedules and embedders call. */
async function withFleet(run: (fleet: Fleet) => Promise<void>): Promise<void> {
  const driver = openSqlite({ dataDir: ':memory:' });
  const silent = { info() {}, warn() {}, error() {} };
  const fleet = new Fleet({ store: driver.store, bus: new LocalBus(), config: resolveConfig({}, {}), log: silent, now: () => Date.now() });
  try {
    await run(fleet);
  } finally {
    fleet.stop();
    await driver.close();
  }
}

const refusedAsBadInput = (field: string) => (err: unknown) => {
  assert.ok(err instanceof FleetError, `a FleetError, not ${String(err)}`);
  assert.equal(err.code, 'FLEETD_ERR_VALIDATION');
  assert.equal(err.status, 400);
  assert.equal(err.details.field, field);
  return true;
};

describe('values JSON cannot hold, from an in-process caller', () => {
  it('refuses a payload or a result that is not JSON as bad input, and stores nothing', async () => {
    await withFleet(async (fleet) => {
      for (const payload of [() => 1, Symbol('s'), 10n, { n: 10n }, [1, { deep: [2n] }]]) {
        await assert.rejects(fleet.tasks.submit({ type: 'x', payload }), refusedAsBadInput('payload'), String(typeof payload));
      }
      assert.equal((await fleet.tasks.list({ limit: 10 })).items.length, 0, 'nothing was stored');

      // JSON's own rules still hold: undefined in an array is null, a function in an object is left out.
      const { task } = await fleet.tasks.submit({ type: 'x', payload: { list: [undefined, 1], skip: () => 1, keep: 'k' } });
      assert.deepEqual(JSON.parse(task.payloadJson), { list: [null, 1], keep: 'k' });

      const { agent } = await fleet.agents.register({ name: 'a', capabilities: ['x'], maxConcurrency: 1 }, 'default');
      const [leased] = await fleet.delivery.claim({ agentId: agent.id, max: 1, waitMs: 0 });
      await assert.rejects(fleet.tasks.complete({ id: leased.id, agentId: agent.id, result: 10n }), refusedAsBadInput('result'));
      assert.equal((await fleet.tasks.get(leased.id)).status, 'leased', 'the refused completion changed nothing');
    });
  });
});
