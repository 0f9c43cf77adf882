import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { repeatCheck, runRequestHash } from '../../src/core/rules/idempotency.js';
import type { RunInsertParams, RunLease } from '../../src/store/pipeline-store.js';
import { eachTest, type DriverFactory } from './harness.js';

/** A run as the engine hands it to the store: its request hash computed by core's rule. */
type RunParams = Omit<RunInsertParams, 'requestHash' | 'pipelineVersion' | 'namespace'> & { pipelineVersion?: number | null; namespace?: string };
const run = (r: RunParams): RunInsertParams => ({
  pipelineVersion: null,
  namespace: 'default',
  ...r,
  requestHash: r.idempotencyKey === null ? null : runRequestHash(r),
});

/** Pipeline runs: insertion once per key, steps, leases between nodes, cancel, list, counts, namespaces. */
export function exerciseRuns(factory: DriverFactory): void {
  describe('runs', () => {
    const h = eachTest(factory);
    const steps = ['a', 'b', 'c'];
    const owner = 'node-a';
    const lease = { owner, leaseMs: 1_000 };
    const insert = (p: { runs: RunParams[]; lease: RunLease; now: number }) => {
      const runs = p.runs.map(run);
      return h.driver.pipelineStore.runInsertMany({ ...p, runs, onRepeat: repeatCheck('run', runs) });
    };

    it('inserts runs with pending steps, once per idempotency key, and refuses a key reused for other input', async () => {
      const runs = h.driver.pipelineStore;
      const [first, second] = await insert({
        runs: [
          { pipeline: 'p', input: { n: 1 }, idempotencyKey: 'k', steps },
          { pipeline: 'p', input: { n: 1 }, idempotencyKey: 'k', steps },
        ],
        lease, now: 1_000,
      });
      assert.equal(first.created, true);
      assert.equal(second.created, false);
      assert.equal(second.run.id, first.run.id);
      assert.equal(first.run.status, 'queued');
      assert.deepEqual(first.run.steps.map((s) => [s.name, s.status, s.attempts]), [['a', 'pending', 0], ['b', 'pending', 0], ['c', 'pending', 0]]);
      await assert.rejects(insert({ runs: [{ pipeline: 'p', input: { n: 2 }, idempotencyKey: 'k', steps }], lease, now: 2_000 }), { code: 'FLEETD_ERR_IDEMPOTENCY_CONFLICT' });
      await assert.rejects(
        insert({ runs: [{ pipeline: 'p', input: 1, idempotencyKey: 'x', steps }, { pipeline: 'q', input: 2, idempotencyKey: 'k', steps }], lease, now: 2_000 }),
        { code: 'FLEETD_ERR_IDEMPOTENCY_CONFLICT' },
      );
      assert.equal((await runs.runList({ limit: 10 })).items.length, 1, 'a failed batch inserts nothing');
    });

    it('records steps: start counts an attempt (not when resuming a running step), retry waits, complete keeps the output', async () => {
      const runs = h.driver.pipelineStore;
      const [{ run }] = await insert({ runs: [{ pipeline: 'p', input: null, idempotencyKey: null, steps }], lease, now: 1 });
      let r = await runs.stepStart({ runId: run.id, owner, step: 'a', now: 2 });
      assert.equal(r!.status, 'running');
      assert.equal(r!.steps[0].status, 'running');
      assert.equal(r!.steps[0].attempts, 1);
      r = await runs.stepStart({ runId: run.id, owner, step: 'a', now: 3 });
      assert.equal(r!.steps[0].attempts, 1, 'resuming an interrupted attempt is not a new attempt');
      r = await runs.stepRetryLater({ runId: run.id, owner, step: 'a', error: { why: 'busy' }, nextAttemptAt: 500, now: 4 });
      assert.deepEqual([r!.steps[0].status, r!.steps[0].nextAttemptAt, r!.steps[0].error], ['pending', 500, { why: 'busy' }]);
      r = await runs.stepStart({ runId: run.id, owner, step: 'a', now: 500 });
      assert.equal(r!.steps[0].attempts, 2);
      r = await runs.stepComplete({ runId: run.id, owner, step: 'a', output: { text: 'done' }, now: 600 });
      assert.deepEqual([r!.steps[0].status, r!.steps[0].output, r!.steps[0].finishedAt], ['completed', { text: 'done' }, 600]);
      assert.deepEqual((await runs.runAcquire({ ...lease, afterId: 0, limit: 10, now: 650 })).map((x) => x.id), [run.id], 'its owner takes it back');
      r = await runs.runComplete({ runId: run.id, owner, output: 'all', now: 700 });
      assert.deepEqual([r!.status, r!.output, r!.finishedAt], ['completed', 'all', 700]);
      assert.deepEqual(await runs.runAcquire({ ...lease, afterId: 0, limit: 10, now: 800 }), [], 'a finished run is nobody\'s to take');
    });

    it('leases a run to one node at a time: another takes it over only once the lease expires, and the first node\'s writes are then refused', async () => {
      const runs = h.driver.pipelineStore;
      const [{ run }] = await insert({ runs: [{ pipeline: 'p', input: null, idempotencyKey: null, steps }], lease, now: 1_000 });
      await runs.stepStart({ runId: run.id, step: 'a', owner, now: 1_100 });
      await runs.stepComplete({ runId: run.id, step: 'a', owner, output: 'A', now: 1_200 });
      await runs.stepStart({ runId: run.id, step: 'b', owner, now: 1_300 });
      const other = { owner: 'node-b', leaseMs: 1_000 };
      assert.deepEqual(await runs.runAcquire({ ...other, afterId: 0, limit: 10, now: 1_500 }), [], 'node-a holds it until 2,000');
      assert.deepEqual(await runs.runRenew({ ...lease, ids: [run.id], now: 1_900 }), [{ id: run.id, updatedAt: 1_300 }], 'node-a renews it until 2,900, and sees its last write');
      assert.deepEqual(await runs.runAcquire({ ...other, afterId: 0, limit: 10, now: 2_500 }), []);

      const [taken] = await runs.runAcquire({ ...other, afterId: 0, limit: 10, now: 3_000 });
      assert.equal(taken.id, run.id, 'node-a stopped renewing: node-b takes the run over');
      assert.deepEqual(taken.steps.map((s) => [s.status, s.output]), [['completed', 'A'], ['running', null], ['pending', null]], 'with its finished step kept');
      assert.deepEqual(await runs.runRenew({ ...lease, ids: [run.id], now: 3_100 }), [], 'node-a learns it lost the run');
      assert.equal(await runs.stepComplete({ runId: run.id, step: 'b', owner, output: 'late', now: 3_200 }), undefined, 'a late write of node-a changes nothing');
      assert.equal(await runs.runComplete({ runId: run.id, owner, output: 'late', now: 3_200 }), undefined);

      const resumed = await runs.stepStart({ runId: run.id, step: 'b', owner: 'node-b', now: 3_300 });
      assert.equal(resumed!.steps[1].attempts, 1, 'node-b resumes the interrupted attempt');
      const done = await runs.stepComplete({ runId: run.id, step: 'b', owner: 'node-b', output: 'B', now: 3_400 });
      assert.deepEqual(done!.steps.map((s) => s.output), ['A', 'B', null]);
      await runs.runRelease({ owner: 'node-b', ids: [run.id] });
      assert.deepEqual((await runs.runAcquire({ ...lease, afterId: 0, limit: 10, now: 3_500 })).map((r) => r.id), [run.id], 'a released run is free to take at once');
    });

    it('takes over runs a page at a time, after a given id', async () => {
      const runs = h.driver.pipelineStore;
      const inserted = await insert({
        runs: Array.from({ length: 5 }, (_, i) => ({ pipeline: 'p', input: i, idempotencyKey: null, steps })),
        lease,
        now: 0,
      });
      const ids = inserted.map((r) => r.run.id);
      const other = { owner: 'node-b', leaseMs: 1_000 };
      const first = await runs.runAcquire({ ...other, afterId: 0, limit: 2, now: 5_000 });
      assert.deepEqual(first.map((r) => r.id), ids.slice(0, 2));
      const rest = await runs.runAcquire({ ...other, afterId: first[1].id, limit: 10, now: 5_000 });
      assert.deepEqual(rest.map((r) => r.id), ids.slice(2));
    });

    it('a failed step fails the run and skips what is left; a finished run ignores late writes', async () => {
      const runs = h.driver.pipelineStore;
      const [{ run }] = await insert({ runs: [{ pipeline: 'p', input: null, idempotencyKey: null, steps }], lease, now: 1 });
      await runs.stepStart({ runId: run.id, owner, step: 'a', now: 2 });
      const failed = await runs.stepFail({ runId: run.id, owner, step: 'a', error: { message: 'boom' }, now: 3 });
      assert.equal(failed!.status, 'failed');
      assert.deepEqual(failed!.error, { step: 'a', error: { message: 'boom' } });
      assert.deepEqual(failed!.steps.map((s) => s.status), ['failed', 'skipped', 'skipped']);
      assert.equal(await runs.stepComplete({ runId: run.id, owner, step: 'a', output: 1, now: 4 }), undefined);
      assert.equal(await runs.stepStart({ runId: run.id, owner, step: 'b', now: 4 }), undefined);
      assert.equal(await runs.runCancel({ runId: run.id, now: 5 }), undefined);
      assert.equal((await runs.runGet({ id: run.id }))!.status, 'failed');
    });

    it('cancels an unfinished run and its unfinished steps', async () => {
      const runs = h.driver.pipelineStore;
      const [{ run }] = await insert({ runs: [{ pipeline: 'p', input: null, idempotencyKey: null, steps }], lease, now: 1 });
      await runs.stepStart({ runId: run.id, owner, step: 'a', now: 2 });
      await runs.stepComplete({ runId: run.id, owner, step: 'a', output: 1, now: 3 });
      await runs.stepStart({ runId: run.id, owner, step: 'b', now: 4 });
      const cancelled = await runs.runCancel({ runId: run.id, now: 5 });
      assert.equal(cancelled!.status, 'cancelled');
      assert.deepEqual(cancelled!.steps.map((s) => s.status), ['completed', 'cancelled', 'cancelled']);
    });

    it('lists newest first by cursor, filters by pipeline and status, and counts by status', async () => {
      const runs = h.driver.pipelineStore;
      const inserted = await insert({
        runs: Array.from({ length: 5 }, (_, i) => ({ pipeline: i % 2 ? 'odd' : 'even', input: i, idempotencyKey: null, steps })),
        lease,
        now: 1,
      });
      await runs.runCancel({ runId: inserted[0].run.id, now: 2 });
      const ids: number[] = [];
      let cursor: string | undefined;
      do {
        const page = await runs.runList({ limit: 2, cursor });
        ids.push(...page.items.map((r) => r.id));
        cursor = page.nextCursor ?? undefined;
      } while (cursor);
      assert.deepEqual(ids, inserted.map((r) => r.run.id).reverse());
      assert.equal((await runs.runList({ pipeline: 'even', limit: 10 })).items.length, 3);
      assert.deepEqual((await runs.runList({ status: 'cancelled', limit: 10 })).items.map((r) => r.id), [inserted[0].run.id]);
      const counts = Object.fromEntries((await runs.runCounts()).map((c) => [`${c.pipeline}/${c.status}`, c.count]));
      assert.deepEqual(counts, { 'even/queued': 2, 'even/cancelled': 1, 'odd/queued': 2 });
    });

    it('numbers the versions of a pipeline from 1, records a deletion only over a live version, and lists the current ones', async () => {
      const runs = h.driver.pipelineStore;
      const v1 = await runs.versionAppend({ namespace: 'default', name: 'p', definition: { steps: [1] }, now: 10 });
      const v2 = await runs.versionAppend({ namespace: 'default', name: 'p', definition: { steps: [2] }, now: 20 });
      await runs.versionAppend({ namespace: 'default', name: 'q', definition: { steps: [] }, now: 30 });
      assert.deepEqual([v1!.version, v2!.version], [1, 2]);
      assert.deepEqual((await runs.versionGet({ namespace: 'default', name: 'p', version: 1 }))!.definition, { steps: [1] });
      assert.equal(await runs.versionGet({ namespace: 'default', name: 'p', version: 9 }), undefined);
      assert.equal(await runs.versionAppend({ namespace: 'default', name: 'none', definition: null, now: 40, onlyIfLive: true }), undefined);
      const deleted = await runs.versionAppend({ namespace: 'default', name: 'q', definition: null, now: 40, onlyIfLive: true });
      assert.deepEqual([deleted!.version, deleted!.definition], [2, null]);
      assert.equal(await runs.versionAppend({ namespace: 'default', name: 'q', definition: null, now: 50, onlyIfLive: true }), undefined, 'deleted once');
      assert.deepEqual((await runs.versionList({ namespace: 'default', name: 'p', limit: 10 })).map((v) => [v.version, v.createdAt]), [[2, 20], [1, 10]]);
      assert.deepEqual((await runs.versionList({ namespace: 'default', name: 'p', limit: 1 })).map((v) => v.version), [2]);
      assert.deepEqual((await runs.versionCurrent({})).map((v) => [v.name, v.version]), [['p', 2]]);
      // Nodes appending at once still number without gaps or repeats.
      await Promise.all(Array.from({ length: 8 }, (_, i) => runs.versionAppend({ namespace: 'default', name: 'busy', definition: { i }, now: 60 })));
      assert.deepEqual((await runs.versionList({ namespace: 'default', name: 'busy', limit: 20 })).map((v) => v.version), [8, 7, 6, 5, 4, 3, 2, 1]);
      const [{ run }] = await insert({ runs: [{ pipeline: 'p', input: null, idempotencyKey: null, steps, pipelineVersion: 2 }], lease, now: 70 });
      assert.equal(run.pipelineVersion, 2);
      assert.equal((await runs.runGet({ id: run.id }))!.pipelineVersion, 2);
    });

    it('keeps namespaces apart: an idempotency key is per namespace, lists filter by namespace, and any node takes over runs of every namespace', async () => {
      const runs = h.driver.pipelineStore;
      const [a, b] = await insert({
        runs: [
          { namespace: 'team-a', pipeline: 'triage', input: 1, idempotencyKey: 'k', steps },
          { namespace: 'team-b', pipeline: 'triage', input: 2, idempotencyKey: 'k', steps },
        ],
        lease,
        now: 1,
      });
      assert.deepEqual([a.created, b.created], [true, true], 'the same key in two namespaces is two keys');
      assert.notEqual(a.run.id, b.run.id);
      assert.deepEqual([a.run.namespace, b.run.namespace], ['team-a', 'team-b']);
      const [again] = await insert({ runs: [{ namespace: 'team-b', pipeline: 'triage', input: 2, idempotencyKey: 'k', steps }], lease, now: 2 });
      assert.deepEqual([again.created, again.run.id], [false, b.run.id], "a repeat finds its own namespace's run");
      await assert.rejects(insert({ runs: [{ namespace: 'team-a', pipeline: 'triage', input: 2, idempotencyKey: 'k', steps }], lease, now: 2 }), {
        code: 'FLEETD_ERR_IDEMPOTENCY_CONFLICT',
      });
      const [plain] = await insert({ runs: [{ pipeline: 'other', input: 3, idempotencyKey: null, steps }], lease, now: 3 });
      assert.equal(plain.run.namespace, 'default');
      assert.equal((await runs.runGet({ id: b.run.id }))!.namespace, 'team-b');

      const listed = async (p: { namespaces?: readonly string[]; pipeline?: string }) => (await runs.runList({ ...p, limit: 10 })).items.map((r) => r.id);
      assert.deepEqual(await listed({ namespaces: ['team-a'] }), [a.run.id]);
      assert.deepEqual(await listed({ namespaces: ['team-a', 'team-b'] }), [b.run.id, a.run.id]);
      assert.deepEqual(await listed({ namespaces: ['team-b'], pipeline: 'triage' }), [b.run.id]);
      assert.deepEqual(await listed({ namespaces: ['team-b'], pipeline: 'other' }), []);
      assert.deepEqual(await listed({ namespaces: [] }), [], 'no namespace, no runs');
      assert.deepEqual(await listed({}), [plain.run.id, b.run.id, a.run.id], 'no filter: every namespace');
      const page = await runs.runList({ namespaces: ['team-a', 'team-b'], limit: 1 });
      assert.deepEqual(
        (await runs.runList({ namespaces: ['team-a', 'team-b'], limit: 1, cursor: page.nextCursor! })).items.map((r) => r.id),
        [a.run.id],
        'pages follow within the filter',
      );

      const taken = await runs.runAcquire({ owner: 'node-b', leaseMs: 1_000, afterId: 0, limit: 10, now: 5_000 });
      assert.deepEqual(taken.map((r) => [r.id, r.namespace]), [[a.run.id, 'team-a'], [b.run.id, 'team-b'], [plain.run.id, 'default']]);
    });

    it("numbers each namespace's versions of a pipeline apart, and lists the current ones of the namespaces asked for", async () => {
      const runs = h.driver.pipelineStore;
      await runs.versionAppend({ namespace: 'team-a', name: 'triage', definition: { steps: ['a1'] }, now: 10 });
      await runs.versionAppend({ namespace: 'team-a', name: 'triage', definition: { steps: ['a2'] }, now: 20 });
      const b1 = await runs.versionAppend({ namespace: 'team-b', name: 'triage', definition: { steps: ['b1'] }, now: 30 });
      assert.deepEqual([b1!.namespace, b1!.version], ['team-b', 1], "another namespace's name starts at 1");
      assert.deepEqual((await runs.versionList({ namespace: 'team-a', name: 'triage', limit: 10 })).map((v) => v.definition), [{ steps: ['a2'] }, { steps: ['a1'] }]);
      assert.equal(await runs.versionGet({ namespace: 'team-b', name: 'triage', version: 2 }), undefined);
      assert.deepEqual((await runs.versionGet({ namespace: 'team-b', name: 'triage', version: 1 }))!.definition, { steps: ['b1'] });
      assert.equal(await runs.versionAppend({ namespace: 'team-c', name: 'triage', definition: null, now: 40, onlyIfLive: true }), undefined);
      await runs.versionAppend({ namespace: 'team-a', name: 'triage', definition: null, now: 40, onlyIfLive: true });
      const current = async (namespaces?: readonly string[]) => (await runs.versionCurrent({ namespaces })).map((v) => [v.namespace, v.name, v.version]);
      assert.deepEqual(await current(), [['team-b', 'triage', 1]], "a deletion in one namespace leaves another's");
      await runs.versionAppend({ namespace: 'team-a', name: 'triage', definition: { steps: ['a4'] }, now: 50 });
      assert.deepEqual(await current(), [['team-a', 'triage', 4], ['team-b', 'triage', 1]]);
      assert.deepEqual(await current(['team-b']), [['team-b', 'triage', 1]]);
      assert.deepEqual(await current([]), []);
    });

    it('an approval step waits with its deadline kept on resume, and is decided once: approval completes it, rejection fails the run', async () => {
      const runs = h.driver.pipelineStore;
      const approval = { prompt: 'ship it?', decideBy: 5_000, onTimeout: 'reject' as const, approvers: null };
      const [{ run }, { run: other }] = await insert({
        runs: [0, 1].map(() => ({ pipeline: 'p', input: null, idempotencyKey: null, steps })),
        lease,
        now: 1,
      });
      const waiting = await runs.stepAwait({ runId: run.id, owner, step: 'a', approval, now: 2 });
      assert.deepEqual([waiting!.status, waiting!.steps[0].status, waiting!.steps[0].attempts], ['running', 'waiting', 1]);
      assert.deepEqual(waiting!.steps[0].approval, approval);
      const resumed = await runs.stepAwait({ runId: run.id, owner, step: 'a', approval: { ...approval, decideBy: 9_000 }, now: 3 });
      assert.deepEqual([resumed!.steps[0].attempts, resumed!.steps[0].startedAt, resumed!.steps[0].approval!.decideBy], [1, 2, 5_000]);
      assert.equal(await runs.stepAwait({ runId: run.id, owner: 'node-b', step: 'a', approval, now: 3 }), undefined, 'fenced by the owner');
      assert.equal(await runs.stepDecide({ runId: run.id, step: 'b', approved: true, output: {}, now: 4 }), undefined, 'a step not waiting');

      const decisions = await Promise.all([
        runs.stepDecide({ runId: run.id, step: 'a', approved: true, output: { decision: 'approved' }, now: 5 }),
        runs.stepDecide({ runId: run.id, step: 'a', approved: false, output: { decision: 'rejected' }, now: 5 }),
      ]);
      assert.equal(decisions.filter((d) => d !== undefined).length, 1, 'one decision wins');
      assert.deepEqual((await runs.runGet({ id: run.id }))!.steps[0].status, decisions[0] ? 'completed' : 'failed');

      await runs.stepAwait({ runId: other.id, owner, step: 'a', approval, now: 2 });
      const rejected = await runs.stepDecide({ runId: other.id, step: 'a', approved: false, output: { decision: 'rejected', comment: 'no' }, now: 6 });
      assert.equal(rejected!.status, 'failed');
      assert.deepEqual(rejected!.error, { step: 'a', error: { decision: 'rejected', comment: 'no' } });
      assert.deepEqual(rejected!.steps.map((s) => s.status), ['failed', 'skipped', 'skipped']);
      assert.deepEqual(rejected!.steps[0].output, { decision: 'rejected', comment: 'no' });
    });

    it('cancelling a run ends its waiting approval', async () => {
      const runs = h.driver.pipelineStore;
      const [{ run }] = await insert({ runs: [{ pipeline: 'p', input: null, idempotencyKey: null, steps }], lease, now: 1 });
      await runs.stepAwait({ runId: run.id, owner, step: 'a', approval: { prompt: '?', decideBy: 9, onTimeout: 'approve', approvers: { agents: ['x'] } }, now: 2 });
      const cancelled = await runs.runCancel({ runId: run.id, now: 3 });
      assert.deepEqual(cancelled!.steps.map((s) => s.status), ['cancelled', 'cancelled', 'cancelled']);
      assert.equal(await runs.stepDecide({ runId: run.id, step: 'a', approved: true, output: {}, now: 4 }), undefined);
    });
  });
}
