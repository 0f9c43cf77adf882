import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { eachTest, type DriverFactory } from './harness.js';

/** Cases: membership, centroids for the index, listing, and assignments taking turns. */
export function exerciseCases(factory: DriverFactory): void {
  describe('cases', () => {
    const h = eachTest(factory);

    it('keeps cases: a run joins one case once, centroids come back for the index', async () => {
      const cases = h.driver.caseStore;
      const made = await cases.caseCreate({ namespace: 'default', runId: 1, title: 'bins', text: 'bins not collected', vector: [1, 0], now: 10 });
      assert.deepEqual([made.size, made.title], [1, 'bins']);
      const grown = await cases.caseAddMember({ caseId: made.id, runId: 2, text: 'bins again', similarity: 0.9, centroid: [0.9, 0.1], now: 20 });
      assert.equal(grown.size, 2);
      await assert.rejects(cases.caseAddMember({ caseId: made.id, runId: 2, text: 'twice', similarity: 0.9, centroid: [0.9, 0.1], now: 30 }));
      assert.deepEqual(await cases.caseOfRun({ runId: 2 }), { caseId: made.id, similarity: 0.9 });
      const [centroid] = await cases.caseCentroids({ afterVersion: 0 });
      assert.deepEqual([centroid.id, centroid.centroid], [made.id, [0.9, 0.1]]);
      const other = await cases.caseCreate({ namespace: 'default', runId: 3, title: 'lights', text: 'street light out', vector: [0, 1], now: 40 });
      assert.deepEqual((await cases.caseCentroids({ afterVersion: centroid.version })).map((c) => c.id), [other.id], 'only what changed since');
      await cases.caseAddMember({ caseId: made.id, runId: 4, text: 'bins', similarity: 0.95, centroid: [0.95, 0.05], now: 50 });
      assert.deepEqual((await cases.caseCentroids({ afterVersion: centroid.version })).map((c) => c.id), [other.id, made.id], 'in the order of their changes');
      assert.deepEqual((await cases.caseMembers({ caseId: made.id, limit: 10 })).map((m) => m.runId), [1, 2, 4]);
      assert.equal((await cases.caseList({ limit: 10 })).items[1].size, 3);
    });

    it('keeps the cases of each namespace: created in one, listed by namespace, centroids say whose', async () => {
      const cases = h.driver.caseStore;
      const a = await cases.caseCreate({ namespace: 'team-a', runId: 1, title: 'bins', text: 'bins', vector: [1, 0], now: 10 });
      const b = await cases.caseCreate({ namespace: 'team-b', runId: 2, title: 'bins', text: 'bins', vector: [1, 0], now: 20 });
      assert.deepEqual([a.namespace, b.namespace], ['team-a', 'team-b']);
      assert.equal((await cases.caseGet({ id: b.id }))!.namespace, 'team-b');
      await cases.caseAddMember({ caseId: a.id, runId: 3, text: 'bins', similarity: 1, centroid: [1, 0], now: 30 });
      assert.equal((await cases.caseGet({ id: a.id }))!.namespace, 'team-a', 'a member leaves the namespace as it was');
      const listed = async (namespaces?: readonly string[]) => (await cases.caseList({ namespaces, limit: 10 })).items.map((c) => c.id);
      assert.deepEqual(await listed(['team-a']), [a.id]);
      assert.deepEqual(await listed(['team-a', 'team-b']), [b.id, a.id]);
      assert.deepEqual(await listed([]), []);
      assert.deepEqual(await listed(), [b.id, a.id]);
      assert.deepEqual(
        (await cases.caseCentroids({ afterVersion: 0 })).map((c) => [c.id, c.namespace]),
        [[b.id, 'team-b'], [a.id, 'team-a']],
      );
    });

    it('lets one assignment to cases run at a time', async () => {
      const cases = h.driver.caseStore;
      const order: string[] = [];
      let open!: () => void;
      let entered!: () => void;
      const gate = new Promise<void>((r) => (open = r));
      const firstIn = new Promise<void>((r) => (entered = r));
      const first = cases.caseExclusive(async () => {
        order.push('first in');
        entered();
        await gate;
        order.push('first out');
      });
      await firstIn;
      const second = cases.caseExclusive(async () => {
        order.push('second in');
      });
      // The check is that the second does not get in while the first holds: give it the chance.
      await new Promise((r) => setTimeout(r, 100));
      open();
      await Promise.all([first, second]);
      assert.deepEqual(order, ['first in', 'first out', 'second in']);
    });
  });
}
