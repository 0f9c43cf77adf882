import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { steadyClock } from '../src/core/clock.js';

describe('the steady clock', () => {
  const start = Date.UTC(2025, 0, 1);
  const machine = () => {
    const m = { wall: start, mono: 0 };
    return { m, now: steadyClock({ wall: () => m.wall, monotonic: () => m.mono, slewRate: 0.01 }) };
  };
  const advance = (m: { wall: number; mono: number }, ms: number) => {
    m.wall += ms;
    m.mono += ms;
  };

  it('follows the wall clock while it runs true', () => {
    const { m, now } = machine();
    assert.equal(now(), start);
    advance(m, 1_234);
    assert.equal(now(), start + 1_234);
  });

  it('does not jump when the wall clock jumps forward: it slews by at most 1 % of the time elapsed', () => {
    const { m, now } = machine();
    m.wall += 5 * 60_000;
    assert.equal(now(), start);
    advance(m, 10_000);
    assert.equal(now(), start + 10_100);
  });

  it('does not go back when the wall clock jumps back, and keeps moving forward', () => {
    const { m, now } = machine();
    advance(m, 1_000);
    const before = now();
    m.wall -= 5 * 60_000;
    assert.equal(now(), before);
    advance(m, 10_000);
    assert.equal(now(), before + 9_900);
  });

  it('catches up with a jumped wall clock in time, then follows it', () => {
    const { m, now } = machine();
    m.wall += 60_000;
    for (let i = 0; i < 120; i++) {
      advance(m, 60_000);
      now();
    }
    assert.equal(now(), m.wall);
    advance(m, 500);
    assert.equal(now(), m.wall);
  });
});
