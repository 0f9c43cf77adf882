import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it, mock } from 'node:test';
import { TickBatcher } from '../src/store/postgres/tick-batcher.js';

/** TickBatcher with setImmediate on fake timers: the test decides when a tick ends. */
describe('TickBatcher', () => {
  beforeEach(() => mock.timers.enable({ apis: ['setImmediate'] }));
  afterEach(() => mock.timers.reset());

  /** A write function that records each batch and answers when the test releases it. */
  function recorder<P>(answer: (params: P) => unknown = (p) => p) {
    const batches: P[][] = [];
    const release: (() => void)[] = [];
    const write = async (batch: P[]) => {
      batches.push(batch);
      await new Promise<void>((r) => release.push(r));
      return batch.map((p) => answer(p) as never);
    };
    return { batches, write, releaseAll: () => release.splice(0).forEach((r) => r()) };
  }

  it('writes the calls of one tick as one batch, in order, and answers each only when the batch is written', async () => {
    const db = recorder<number>((n) => n * 10);
    const batcher = new TickBatcher(db.write);
    let answered = 0;
    const calls = [1, 2, 3].map((n) => batcher.run(n).then((r) => (answered++, r)));
    assert.deepEqual(db.batches, [], 'nothing is written before the tick ends');
    mock.timers.tick(0);
    assert.deepEqual(db.batches, [[1, 2, 3]]);
    await new Promise((r) => setTimeout(r, 0));
    assert.equal(answered, 0, 'no answer before the write is done');
    db.releaseAll();
    assert.deepEqual(await Promise.all(calls), [10, 20, 30]);
  });

  it('rejects only the calls the write answered with an error', async () => {
    const batcher = new TickBatcher<number, number>(async (batch) => batch.map((n) => (n === 2 ? new Error('task 2 is not leased') : n)));
    const calls = [1, 2, 3].map((n) => batcher.run(n));
    mock.timers.tick(0);
    const outcomes = await Promise.allSettled(calls);
    assert.deepEqual(
      outcomes.map((o) => o.status),
      ['fulfilled', 'rejected', 'fulfilled'],
    );
  });

  it('rejects every call of a batch whose write fails', async () => {
    const batcher = new TickBatcher<number, number>(async () => {
      throw new Error('connection lost');
    });
    const calls = [1, 2].map((n) => batcher.run(n));
    mock.timers.tick(0);
    for (const outcome of await Promise.allSettled(calls)) assert.equal(outcome.status === 'rejected' && (outcome.reason as Error).message, 'connection lost');
  });

  it('puts calls with the same unique key into separate batches, and splits at maxBatch', async () => {
    const db = recorder<{ id: number }>(() => 'ok');
    const batcher = new TickBatcher(db.write, { unique: (p) => p.id, maxBatch: 2 });
    const calls = [1, 1, 2, 3].map((id) => batcher.run({ id }));
    mock.timers.tick(0);
    assert.deepEqual(
      db.batches.map((b) => b.map((p) => p.id)),
      [[1, 2], [1, 3]],
    );
    db.releaseAll();
    await Promise.all(calls);
  });

  it('a call made while a batch is being written goes into the next tick’s batch', async () => {
    const db = recorder<number>();
    const batcher = new TickBatcher(db.write);
    const first = batcher.run(1);
    mock.timers.tick(0);
    const second = batcher.run(2);
    mock.timers.tick(0);
    assert.deepEqual(db.batches, [[1], [2]]);
    db.releaseAll();
    assert.deepEqual(await Promise.all([first, second]), [1, 2]);
  });
});
