import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it, mock } from 'node:test';
import { LocalBus } from '../src/bus/local-bus.js';
import type { CodeFunction, StepContext, StepDefinition, StepRunner } from '../src/pipelines/definition.js';
import { PipelineEngine } from '../src/pipelines/engine.js';
import { StepError } from '../src/pipelines/steps/step.js';
import { compilePipeline } from '../src/pipelines/validate.js';
import { openSqlite, type SqliteDriver } from '../src/store/sqlite/driver.js';

/** A step the test finishes by hand: `started(n)` resolves with the context of its n-th start. */
class Gate {
  readonly contexts: StepContext[] = [];
  private waiters: { count: number; resolve(ctx: StepContext): void }[] = [];
  private running: { ctx: StepContext; resolve(v: unknown): void; reject(e: unknown): void }[] = [];
  readonly fn: CodeFunction = (ctx) => {
    this.contexts.push(ctx);
    for (const w of this.waiters.filter((w) => this.contexts.length >= w.count)) {
      this.waiters.splice(this.waiters.indexOf(w), 1);
      w.resolve(this.contexts[w.count - 1]);
    }
    return new Promise((resolve, reject) => this.running.push({ ctx, resolve, reject }));
  };
  started(count = 1): Promise<StepContext> {
    if (this.contexts.length >= count) return Promise.resolve(this.contexts[count - 1]);
    return new Promise((resolve) => this.waiters.push({ count, resolve }));
  }
  /** The oldest start not yet finished; with `evenAborted`, also one whose signal fired (its run cancelled, its engine stopped). */
  private next(evenAborted: boolean) {
    const i = this.running.findIndex((r) => evenAborted || !r.ctx.signal.aborted);
    assert.ok(i >= 0, 'no step running to finish');
    return this.running.splice(i, 1)[0];
  }
  finish(value: unknown, { evenAborted = false } = {}): void {
    this.next(evenAborted).resolve(value);
  }
  fail(err: unknown): void {
    this.next(false).reject(err);
  }
}

/**
 * PipelineEngine on the real SQLite pipeline store and the in-process bus, with `code` steps the
 * test drives by hand. The engine's clock is the test's and its retry timers are fake; events on
 * the bus are what the test waits on.
 */
describe('PipelineEngine', () => {
  let sqlite: SqliteDriver;
  let bus: LocalBus;
  let clock: number;
  const engines: PipelineEngine[] = [];

  beforeEach(() => {
    sqlite = openSqlite({ dataDir: ':memory:' });
    bus = new LocalBus();
    clock = 1_000_000;
  });
  afterEach(async () => {
    mock.timers.reset();
    for (const engine of engines.splice(0)) await engine.stop();
    await sqlite.close();
  });

  async function engineFor(steps: StepDefinition[], options: { concurrency?: number; owner?: string } = {}) {
    await sqlite.migrate();
    const pipeline = compilePipeline({ name: 'p', steps }, { providers: new Set(), functions: new Set() });
    const code: StepRunner = async (ctx) => (ctx.step as { fn: CodeFunction }).fn(ctx);
    const unused: StepRunner = async () => assert.fail('only code steps run here');
    const engine = new PipelineEngine({
      store: sqlite.pipelineStore,
      bus,
      log: { info() {}, warn() {}, error() {} },
      pipelines: new Map([['p', pipeline]]),
      runners: { code, llm: unused, embed: unused, http: unused, agent: unused, nlp: unused },
      concurrency: options.concurrency ?? 8,
      owner: options.owner ?? 'node-a',
      runLeaseMs: 60_000,
      limits: { maxPayloadBytes: 1 << 20, maxPayloadDepth: 64, maxBatch: 100 },
      now: () => clock,
      random: () => 0,
    });
    engines.push(engine);
    await engine.start();
    return engine;
  }

  /** Resolves with the `pipeline.run.finished` event of run `id`. */
  const finished = (id: () => number) =>
    new Promise<{ id: number; status: string }>((resolve) => {
      const off = bus.subscribe('pipeline.run.finished', ({ run }) => {
        if (run.id !== id()) return;
        off();
        resolve(run);
      });
    });

  it('starts a step when its needs have completed, runs independent steps side by side, and completes the run with the sinks’ outputs', async () => {
    const [extract, classify, sector] = [new Gate(), new Gate(), new Gate()];
    const engine = await engineFor([
      { name: 'extract', kind: 'code', fn: extract.fn },
      { name: 'classify', kind: 'code', fn: classify.fn, needs: ['extract'] },
      { name: 'sector', kind: 'code', fn: sector.fn, needs: ['extract'] },
    ]);
    const [{ run }] = await engine.startRuns('p', [{ input: { text: 'pothole' } }]);
    const done = finished(() => run.id);
    const ctx = await extract.started();
    assert.deepEqual(ctx.input, { text: 'pothole' });
    assert.equal(classify.contexts.length + sector.contexts.length, 0, 'steps that need extract wait for it');
    extract.finish('roads');
    const [c, s] = await Promise.all([classify.started(), sector.started()]);
    assert.deepEqual([c.steps, s.steps], [{ extract: 'roads' }, { extract: 'roads' }], 'each sees the output of the step it needs');
    sector.finish('public works');
    classify.finish('complaint');
    assert.equal((await done).status, 'completed');
    const stored = await engine.get(run.id);
    assert.deepEqual(stored.output, { classify: 'complaint', sector: 'public works' });
  });

  it('never runs more steps at once than the lane allows, across runs', async () => {
    const gate = new Gate();
    const engine = await engineFor([{ name: 'only', kind: 'code', fn: gate.fn }], { concurrency: 2 });
    const runs = await engine.startRuns('p', Array.from({ length: 5 }, (_, i) => ({ input: i })));
    await gate.started(2);
    assert.deepEqual(engine.usage(), { runsActive: 5, stepsRunning: 2, stepsWaitingForLane: 3 });
    const done = runs.map(({ run }) => finished(() => run.id));
    for (let i = 0; i < 5; i++) {
      await gate.started(i + 1);
      assert.ok(engine.usage().stepsRunning <= 2);
      gate.finish(i);
    }
    for (const outcome of await Promise.all(done)) assert.equal(outcome.status, 'completed');
  });

  it('retries a failed step after its backoff, and fails the run with the step’s error once its attempts are spent', async () => {
    mock.timers.enable({ apis: ['setTimeout'] });
    const gate = new Gate();
    const engine = await engineFor([{ name: 'flaky', kind: 'code', fn: gate.fn, attempts: 2, backoffMs: 5_000 }]);
    const [{ run }] = await engine.startRuns('p', [{ input: null }]);
    const done = finished(() => run.id);
    const retrying = new Promise((resolve) => bus.subscribe('pipeline.step.failed', (e) => e.willRetry && resolve(e)));
    await gate.started(1);
    gate.fail(new StepError('the provider is overloaded', true));
    await retrying;
    const waiting = (await engine.get(run.id)).steps[0];
    assert.equal(waiting.nextAttemptAt, clock + 5_000, 'the retry waits the backoff (no jitter here)');
    clock += 4_999;
    mock.timers.tick(4_999);
    assert.equal(gate.contexts.length, 1, 'not retried before its time');
    clock += 1;
    mock.timers.tick(1);
    const second = await gate.started(2);
    assert.equal(second.attempt, 2);
    gate.fail(new StepError('still overloaded', true));
    assert.equal((await done).status, 'failed');
    const failed = await engine.get(run.id);
    assert.equal((failed.error as { step: string }).step, 'flaky');
    assert.equal(gate.contexts.length, 2);
  });

  it('cancelling a run aborts the step in flight, and its late result is not recorded', async () => {
    const gate = new Gate();
    const engine = await engineFor([{ name: 'slow', kind: 'code', fn: gate.fn }]);
    const [{ run }] = await engine.startRuns('p', [{ input: null }]);
    const ctx = await gate.started();
    const cancelled = await engine.cancel(run.id);
    assert.equal(cancelled.status, 'cancelled');
    assert.equal(ctx.signal.aborted, true, 'the step’s signal fired');
    gate.finish('too late', { evenAborted: true });
    const after = await engine.get(run.id);
    assert.equal(after.status, 'cancelled');
    assert.equal(after.steps[0].output, null);
  });

  it('a new engine on the same store resumes an unfinished run: a completed step never runs again, the one in flight does', async () => {
    const [a, b] = [new Gate(), new Gate()];
    const steps: StepDefinition[] = [
      { name: 'a', kind: 'code', fn: a.fn },
      { name: 'b', kind: 'code', fn: b.fn },
    ];
    const first = await engineFor(steps);
    const [{ run }] = await first.startRuns('p', [{ input: null }]);
    await a.started();
    a.finish('A');
    await b.started(1);
    await first.stop(); // gives up its lease: the run is free to take at once

    const done = finished(() => run.id);
    await engineFor(steps, { owner: 'node-b' });
    const again = await b.started(2);
    assert.deepEqual(again.steps, { a: 'A' }, 'the resumed step sees the recorded output');
    b.finish('B');
    assert.equal((await done).status, 'completed');
    assert.equal(a.contexts.length, 1, 'the completed step did not run again');
  });
});
