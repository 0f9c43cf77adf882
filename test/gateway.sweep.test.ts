import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Sweep } from '../src/server/gateway/sweep.js';

/** A sweep over `n` entries, ticked by hand on a clock the test moves: which keys each tick visited. */
function sweepOf(n: number, periodMs: number) {
  const entries = new Map(Array.from({ length: n }, (_, i) => [i, `v${i}`] as const));
  let now = 0;
  const visits: { key: number; at: number }[] = [];
  const sweep = new Sweep(entries, periodMs, (key) => void visits.push({ key, at: now }), () => now);
  const at = (ms: number) => {
    now = ms;
    sweep.tick();
  };
  return { entries, visits, at, visitedAt: (ms: number) => visits.filter((v) => v.at === ms).map((v) => v.key) };
}

describe('Sweep', () => {
  it('visits every entry once a period, a hundredth of them a tick', () => {
    const s = sweepOf(1_000, 10_000);
    for (let t = 0; t < 10_000; t += 100) s.at(t);
    assert.deepEqual(
      s.visits.map((v) => v.key),
      Array.from({ length: 1_000 }, (_, i) => i),
      'each entry once, in order',
    );
    for (let t = 0; t < 10_000; t += 100) assert.ok(s.visitedAt(t).length <= 20, `the tick at ${t} ms visited ${s.visitedAt(t).length}`);
    // The next round begins a period after this one began, not when it ended.
    s.at(9_950);
    assert.equal(s.visits.length, 1_000);
    s.at(10_000);
    assert.deepEqual(s.visitedAt(10_000), Array.from({ length: 10 }, (_, i) => i));
  });

  it('catches up a few hundredths a tick when its ticks ran late, and goes on to its end past its period', () => {
    const s = sweepOf(100, 1_000);
    s.at(0);
    assert.equal(s.visits.length, 1);
    // The event loop was busy for half a period: the next tick takes four hundredths, not the fifty owed.
    s.at(500);
    assert.equal(s.visits.length, 5);
    for (let t = 510; t <= 700; t += 10) s.at(t);
    assert.equal(s.visits.length, 71, 'back on pace by 700 ms: 70 hundredths, and the slice ahead');
    // Busy past the period: the round goes on to its end, four a tick, and the next begins as it ends.
    s.at(1_200);
    assert.equal(s.visits.length, 75);
    for (let t = 1_210; t <= 1_270; t += 10) s.at(t);
    assert.deepEqual(
      s.visits.map((v) => v.key),
      [...Array.from({ length: 100 }, (_, i) => i), 0],
    );
    assert.equal(s.visits.at(-1)?.at, 1_270);
  });

  it('visits an entry added during a round at its end, and not one deleted before its turn', () => {
    const s = sweepOf(10, 1_000);
    s.at(0);
    s.entries.delete(9);
    s.entries.set(10, 'v10');
    for (let t = 10; t < 1_000; t += 10) s.at(t);
    assert.deepEqual(
      s.visits.map((v) => v.key),
      [0, 1, 2, 3, 4, 5, 6, 7, 8, 10],
    );
  });

  it('a round over an empty map visits an entry that comes during it, and the next round again', () => {
    const s = sweepOf(0, 1_000);
    s.at(0);
    s.at(100);
    assert.equal(s.visits.length, 0);
    s.entries.set(1, 'v1');
    for (let t = 110; t <= 1_000; t += 10) s.at(t);
    assert.deepEqual(
      s.visits.map((v) => v.at),
      [110, 1_000],
    );
  });
});
