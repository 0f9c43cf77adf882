import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { entrySize, retainedFloor, type ActivityBounds } from '../../src/core/rules/activity.js';
import type { ActivityInput } from '../../src/domain/activity.js';
import type { Store } from '../../src/store/store.js';
import { T0, eachTest, task, type DriverFactory } from './harness.js';

const log = (message: string): ActivityInput => ({ kind: 'log', level: 'info', message });
const out = (text: string): ActivityInput => ({ kind: 'output', text });
const progress = (value: number, message: string | null = null): ActivityInput => ({ kind: 'progress', progress: value, message });

/** An append as core makes it: the entries' sizes and the floor of its bounds. */
function append(store: Store, id: number, agentId: string, inputs: ActivityInput[], bounds: ActivityBounds = { logLines: 1_000, outputBytes: 262_144 }, now = T0) {
  return store.taskActivityAppend({
    id,
    agentId,
    now,
    entries: inputs.map((entry) => ({ entry, size: entrySize(entry) })),
    floor: (totals) => retainedFloor(totals, bounds),
  });
}

/** Task activity: progress, log lines and output appended by the lease holder, numbered per task, bounded. */
export function exerciseActivity(factory: DriverFactory): void {
  describe('activity', () => {
    const h = eachTest(factory);

    async function leased(): Promise<{ id: number; agentId: string }> {
      const agentId = await h.agent(['act']);
      await h.submit(task('act'));
      const [t] = (await h.store.taskClaim({ agentId, max: 1, now: T0 })).tasks;
      return { id: t.id, agentId };
    }

    it('NumbersEntriesPerTaskInOrderAndReadsThemBackAfterASequenceNumber', async () => {
      const { store } = h;
      const a = await leased();
      const b = await leased();
      const first = await append(store, a.id, a.agentId, [progress(0.25, 'a quarter'), log('fetched'), out('The quick ')]);
      assert.deepEqual(first.entries?.map((e) => [e.seq, e.kind]), [[1, 'progress'], [2, 'log'], [3, 'output']]);
      assert.deepEqual(first.entries && first.totals, { seq: 3, progress: 1, logLines: 1, outputBytes: 10 });
      // Another task's numbers are its own.
      assert.deepEqual((await append(store, b.id, b.agentId, [log('other')])).entries?.map((e) => e.seq), [1]);
      await append(store, a.id, a.agentId, [out('brown fox'), { kind: 'log', level: 'warn', message: 'slow' }], undefined, T0 + 5);

      const all = await store.taskActivityRead({ id: a.id, since: 0, limit: 100 });
      assert.deepEqual(all.entries, [
        { seq: 1, at: T0, kind: 'progress', progress: 0.25, message: 'a quarter' },
        { seq: 2, at: T0, kind: 'log', level: 'info', message: 'fetched' },
        { seq: 3, at: T0, kind: 'output', text: 'The quick ' },
        { seq: 4, at: T0 + 5, kind: 'output', text: 'brown fox' },
        { seq: 5, at: T0 + 5, kind: 'log', level: 'warn', message: 'slow' },
      ]);
      assert.deepEqual(all.totals, { seq: 5, progress: 1, logLines: 2, outputBytes: 19 });
      assert.deepEqual(all.progress, { seq: 1, at: T0, kind: 'progress', progress: 0.25, message: 'a quarter' });
      assert.equal(all.more, false);

      const later = await store.taskActivityRead({ id: a.id, since: 3, limit: 1 });
      assert.deepEqual(later.entries.map((e) => e.seq), [4]);
      assert.equal(later.more, true);
      assert.equal(later.progress?.seq, 1, 'the latest progress comes whatever since is');

      const none = await store.taskActivityRead({ id: 999_999, since: 0, limit: 10 });
      assert.deepEqual(none, { totals: { seq: 0, progress: 0, logLines: 0, outputBytes: 0 }, progress: null, entries: [], more: false });
    });

    it('RefusesAnAgentThatDoesNotHoldTheLeaseAndWritesNothing', async () => {
      const { store } = h;
      const a = await leased();
      const stranger = await h.agent(['act']);
      const refusal = await append(store, a.id, stranger, [log('not mine')]);
      assert.equal(refusal.entries, undefined);
      assert.equal(refusal.current?.status, 'leased');
      assert.equal(refusal.current?.agentId, a.agentId);
      assert.equal((await append(store, 999_999, a.agentId, [log('gone')])).current, undefined);

      await store.taskComplete({ id: a.id, agentId: a.agentId, result: null, now: T0 + 1 });
      const late = await append(store, a.id, a.agentId, [out('too late')]);
      assert.equal(late.entries, undefined);
      assert.equal(late.current?.status, 'completed');
      const tail = await store.taskActivityRead({ id: a.id, since: 0, limit: 10 });
      assert.deepEqual(tail.entries, []);
      assert.equal(tail.totals.seq, 0);
    });

    it('KeepsTheNewestLinesAndBytesWithinTheBoundsAndOnlyTheLatestProgress', async () => {
      const { store } = h;
      const a = await leased();
      const bounds = { logLines: 3, outputBytes: 10 };
      for (let i = 1; i <= 5; i++) await append(store, a.id, a.agentId, [log(`line ${i}`), progress(i / 10)], bounds);
      // 4 + 4 + 4 bytes: only the newest whole chunks within 10 bytes stay.
      await append(store, a.id, a.agentId, [out('aaaa'), out('bbbb'), out('cccc')], bounds);
      await append(store, a.id, a.agentId, [out('é')], bounds); // two bytes in UTF-8
      const tail = await store.taskActivityRead({ id: a.id, since: 0, limit: 100 });
      assert.deepEqual(
        tail.entries.filter((e) => e.kind === 'log').map((e) => (e.kind === 'log' ? e.message : '')),
        ['line 3', 'line 4', 'line 5'],
      );
      assert.deepEqual(
        tail.entries.filter((e) => e.kind === 'output').map((e) => (e.kind === 'output' ? e.text : '')),
        ['bbbb', 'cccc', 'é'],
      );
      assert.deepEqual(tail.entries.filter((e) => e.kind === 'progress').map((e) => (e.kind === 'progress' ? e.progress : 0)), [0.5]);
      assert.deepEqual(tail.totals, { seq: 14, progress: 5, logLines: 5, outputBytes: 14 });
    });

    it('TakesConcurrentAppendsToOneTaskEachWithItsOwnNumbers', async () => {
      const { store } = h;
      const a = await leased();
      const results = await Promise.all(Array.from({ length: 20 }, (_, i) => append(store, a.id, a.agentId, [log(`${i}a`), log(`${i}b`)])));
      const seqs = results.flatMap((r) => r.entries?.map((e) => e.seq) ?? []).sort((x, y) => x - y);
      assert.deepEqual(seqs, Array.from({ length: 40 }, (_, i) => i + 1));
      const tail = await store.taskActivityRead({ id: a.id, since: 0, limit: 100 });
      // Each append's lines are adjacent, in the order given.
      for (let i = 0; i < 40; i += 2) {
        const [x, y] = [tail.entries[i], tail.entries[i + 1]];
        assert.ok(x.kind === 'log' && y.kind === 'log' && x.message.endsWith('a') && y.message === `${x.message.slice(0, -1)}b`);
      }
    });

    it('DropsATasksActivityWithTheTask', async () => {
      const { store } = h;
      const a = await leased();
      await append(store, a.id, a.agentId, [log('bye'), out('x')]);
      await store.taskComplete({ id: a.id, agentId: a.agentId, result: null, now: T0 + 1 });
      assert.equal(await store.taskDeleteFinished({ before: T0 + 2, limit: 10 }), 1);
      const tail = await store.taskActivityRead({ id: a.id, since: 0, limit: 10 });
      assert.deepEqual(tail, { totals: { seq: 0, progress: 0, logLines: 0, outputBytes: 0 }, progress: null, entries: [], more: false });
    });
  });
}
