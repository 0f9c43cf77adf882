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

  it('takes the keys a round began with: one added during it waits for the next, one deleted is skipped', () => {
    const s = sweepOf(10, 1_000);
    s.at(0);
    s.entries.delete(9);
    s.entries.set(10, 'v10');
    for (let t = 10; t < 2_000; t += 10) s.at(t);
    assert.deepEqual(
      s.visits.map((v) => v.key),
      [0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 2, 3, 4, 5, 6, 7, 8, 10],
    );
  });

  it('begins its rounds a period apart over an empty map, and visits an entry that came in the next', () => {
    const s = sweepOf(0, 1_000);
    s.at(0);
    s.entries.set(1, 'v1');
    for (let t = 10; t < 1_000; t += 10) s.at(t);
    assert.equal(s.visits.length, 0);
    s.at(1_000);
    assert.deepEqual(s.visitedAt(1_000), [1]);
  });

  it('comes back to every entry while others come and go faster than it visits them', () => {
    // A client in a reconnect loop: a socket a tick, each open for two ticks.
    const s = sweepOf(1, 10_000);
    for (let tick = 0, next = 1; tick < 600; tick++, next++) {
      s.at(tick * 100);
      s.entries.set(next, `v${next}`);
      if (next > 2) s.entries.delete(next - 2);
    }
    const ofFirst = s.visits.filter((v) => v.key === 0).map((v) => v.at);
    assert.deepEqual(ofFirst, [0, 10_000, 20_000, 30_000, 40_000, 50_000]);
  });

  it('keeps a short period: ticks of 10 ms take a tenth of a 100 ms round', () => {
    const s = sweepOf(1_000, 100);
    for (let t = 0; t < 1_000; t += 10) s.at(t);
    const counts = new Map<number, number>();
    for (const v of s.visits) counts.set(v.key, (counts.get(v.key) ?? 0) + 1);
    assert.deepEqual(new Set(counts.values()), new Set([10]), 'each entry visited ten times in ten periods');
  });
});
