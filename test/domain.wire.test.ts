import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { iso } from '../src/domain/wire.js';

describe('iso', () => {
  it('formats every instant as toISOString does, whatever instants came before it (repeats, and others of the same slot)', () => {
    const base = Date.UTC(2026, 11, 4);
    // Instants near one another, so that repeats and instants 256 ms apart (one slot) are common.
    const instant = fc.oneof(fc.integer({ min: 0, max: 2_000 }).map((d) => base + d), fc.integer({ min: -8.64e15, max: 8.64e15 }));
    fc.assert(
      fc.property(fc.array(instant, { minLength: 1, maxLength: 200 }), (instants) => {
        for (const ms of instants) assert.equal(iso(ms), new Date(ms).toISOString());
      }),
    );
  });

  it('refuses an instant that is not a time, as toISOString does', () => {
    assert.throws(() => iso(Number.NaN), RangeError);
    assert.throws(() => iso(8.64e15 + 1), RangeError);
  });
});
