import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { EventWindow, type RetainedEvent } from '../src/server/gateway/event-window.js';

const event = (seq: number, bytes = 10): RetainedEvent => ({ seq, name: 'task.created', topics: ['tasks'], at: '', data: () => ({ seq }), bytes });

describe('the replay window of the observer stream', () => {
  it('keeps the newest events within its count, and answers those after a number with the oldest it holds', () => {
    const window = new EventWindow(100, 1_000_000);
    for (let seq = 1; seq <= 5_000; seq++) window.push(event(seq));
    const { events, oldest } = window.after(4_950, 5_000);
    assert.equal(oldest, 4_901);
    assert.deepEqual(events.map((e) => e.seq), Array.from({ length: 50 }, (_, i) => 4_951 + i));
    assert.deepEqual(window.after(10, 5_000).events.length, 100, 'everything held, when asked for more');
    assert.deepEqual(window.after(5_000, 5_000).events, []);
  });

  it('lets large events go sooner: the bytes they hold are bounded too, the newest always kept', () => {
    const window = new EventWindow(1_000, 1_000);
    for (let seq = 1; seq <= 20; seq++) window.push(event(seq, 100));
    assert.equal(window.after(0, 20).oldest, 11);
    window.push(event(21, 5_000));
    assert.deepEqual(window.after(0, 21).events.map((e) => e.seq), [21]);
  });

  it('holds nothing when turned off: every resume is a gap', () => {
    const window = new EventWindow(0, 1_000);
    window.push(event(1));
    assert.deepEqual(window.after(0, 1), { events: [], oldest: 2 });
  });
});
