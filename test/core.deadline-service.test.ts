import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it, mock } from 'node:test';
import { DeadlineService } from '../src/core/maintenance/deadline-service.js';

/** A service whose runOnce records when it ran and answers what the test scripted. */
class Recording extends DeadlineService {
  readonly runs: number[] = [];
  readonly errors: unknown[] = [];
  answers: ({ more: boolean; next: number | null } | Error)[] = [];
  /** When set, runOnce waits for it: a run in flight. */
  hold: Promise<void> | undefined;

  constructor(maxSleepMs = 60_000) {
    super('recording', () => Date.now(), maxSleepMs, (err) => this.errors.push(err));
  }

  async runOnce(now: number) {
    this.runs.push(now);
    if (this.hold) await this.hold;
    const answer = this.answers.shift() ?? { more: false, next: null };
    if (answer instanceof Error) throw answer;
    return answer;
  }
}

/**
 * DeadlineService on fake timers and a fake wall clock: `advance(ms)` moves both, then lets the
 * promise callbacks the timers set off run.
 */
describe('DeadlineService', () => {
  let service: Recording;
  const advance = async (ms: number) => {
    mock.timers.tick(ms);
    for (let i = 0; i < 5; i++) await Promise.resolve();
  };
  const t0 = 1_000_000;

  beforeEach(() => {
    mock.timers.enable({ apis: ['setTimeout', 'Date'], now: t0 });
    mock.method(Math, 'random', () => 0); // no start-up delay
    service = new Recording();
  });
  afterEach(() => {
    service.stop();
    mock.timers.reset();
    mock.restoreAll();
  });

  it('runs once at start, then sleeps until the deadline runOnce reports, not a millisecond less', async () => {
    service.answers = [{ more: false, next: t0 + 5_000 }];
    service.start();
    await advance(0);
    assert.deepEqual(service.runs, [t0]);
    await advance(4_999);
    assert.equal(service.runs.length, 1, 'nothing runs before the deadline');
    await advance(1);
    assert.deepEqual(service.runs, [t0, t0 + 5_000]);
  });

  it('starts after a random delay of under 50 ms, so that nodes restarted together do not sweep at once', async () => {
    mock.method(Math, 'random', () => 0.999);
    service.start();
    await advance(48);
    assert.equal(service.runs.length, 0);
    await advance(1);
    assert.deepEqual(service.runs, [t0 + 49]);
  });

  it('runs again at once while runOnce says more work is due (bounded batches)', async () => {
    service.answers = [{ more: true, next: null }, { more: true, next: null }, { more: false, next: null }];
    service.start();
    await advance(0);
    await advance(0);
    await advance(0);
    assert.deepEqual(service.runs, [t0, t0, t0]);
  });

  it('with no deadline, sleeps at most maxSleepMs (deadlines other nodes made are still met)', async () => {
    service.start();
    await advance(0);
    await advance(60_000);
    assert.deepEqual(service.runs, [t0, t0 + 60_000]);
  });

  it('poke with an earlier deadline wakes it sooner; a later one changes nothing', async () => {
    service.answers = [{ more: false, next: t0 + 10_000 }];
    service.start();
    await advance(0);
    service.poke(t0 + 20_000);
    service.poke(t0 + 3_000);
    await advance(3_000);
    assert.deepEqual(service.runs, [t0, t0 + 3_000]);
  });

  it('a poke for now during a run makes it run again right after, so the work it announced is not missed', async () => {
    let release!: () => void;
    service.hold = new Promise((r) => (release = r));
    service.answers = [{ more: false, next: t0 + 30_000 }];
    service.start();
    await advance(0);
    service.poke(Date.now()); // a write made work due while runOnce was reading
    service.hold = undefined;
    release();
    await advance(0);
    await advance(0);
    assert.deepEqual(service.runs, [t0, t0]);
  });

  it('a failing run is reported and retried a second later', async () => {
    const failure = new Error('store unavailable');
    service.answers = [failure];
    service.start();
    await advance(0);
    assert.deepEqual(service.errors, [failure]);
    await advance(999);
    assert.equal(service.runs.length, 1);
    await advance(1);
    assert.deepEqual(service.runs, [t0, t0 + 1_000]);
  });

  it('after stop nothing runs, and a poke does not start it again', async () => {
    service.answers = [{ more: false, next: t0 + 1_000 }];
    service.start();
    await advance(0);
    service.stop();
    service.poke(Date.now());
    await advance(120_000);
    assert.deepEqual(service.runs, [t0]);
  });
});
