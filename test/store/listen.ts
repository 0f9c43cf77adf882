import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { T0, eachTest, rules, task, type DriverFactory } from './harness.js';
import { repeatCheck } from '../../src/core/rules/idempotency.js';

/**
 * Wake-ups between nodes, for drivers that have them (`supportsListen`): a node hears tasks made
 * claimable by another node sharing the store, never its own.
 */
export function exerciseListen(factory: DriverFactory): void {
  describe('listen', () => {
    const h = eachTest(factory);

    it('WakesListenersInOtherNodesWhenTasksBecomeClaimable, not the sender', async () => {
      const a = h.driver;
      const b = h.openSibling();
      try {
        const heardByA: Record<string, number>[] = [];
        const heardByB: Record<string, number>[] = [];
        let wake: () => void = () => {};
        const stopA = await a.listen!((e) => {
          heardByA.push(e);
          wake();
        });
        const stopB = await b.listen!((e) => heardByB.push(e));
        const heard = new Promise<void>((resolve) => (wake = resolve));
        const tasks = [task('n'), task('n'), task('m', { requires: ['m', 'x'] })];
        await b.store.taskInsertMany({ tasks, now: T0, onRepeat: repeatCheck('task', tasks) });
        await heard;
        assert.deepEqual(heardByA, [{ n: 2, 'm\nx': 1 }]);
        // A rescue on B (a lease that expired) is a wake-up too.
        await b.store.agentCreateMany([{ id: 'w', name: 'w', capabilities: ['n'], labels: {}, maxConcurrency: 5, namespace: 'default', tokenHash: 'h', now: T0 }]);
        await b.store.taskClaim({ agentId: 'w', max: 1, now: T0 });
        const rescued = new Promise<void>((resolve) => (wake = resolve));
        await b.store.taskRescueExpiredLeases({ now: T0 + 5_000, limit: 10, endLease: rules.expired(T0 + 5_000) });
        await rescued;
        assert.deepEqual(heardByA[1], { n: 1 });
        assert.deepEqual(heardByB, [], 'a node does not hear its own notifications');
        await stopA();
        await stopB();
      } finally {
        await b.close();
      }
    });
  });
}
