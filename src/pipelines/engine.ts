import { retryDelay } from '../core/backoff.js';
import { repeatCheck, runRequestHash } from '../core/rules/idempotency.js';
import type { Bus } from '../bus/bus.js';
import type { Logger } from '../core/context.js';
import { FleetError, invalid, isDependencyUnavailable, notFound } from '../domain/errors.js';
import { DEFAULT_NAMESPACE, type NamespaceFilter } from '../domain/namespaces.js';
import { checkJsonValue } from '../core/payload.js';
import type { Page } from '../domain/types.js';
import { Semaphore } from '../limits/semaphore.js';
import { ProviderError } from '../providers/provider.js';
import { endStepSpan, startStepSpan, traceRunFinished } from '../tracing/tracing.js';
import type { PipelineStore } from '../store/pipeline-store.js';
import type { CompiledStep, Pipeline, PipelineDefinition, StepContext, StepRunner, WorkKind } from './definition.js';
import { type Asker, decision, deciderOf, mayDecide } from './approvals.js';
import { renderText } from './template.js';
import { PipelineDefinitions } from './definitions.js';
import { StepError } from './steps/step.js';
import { FINISHED_RUN_STATUSES, type ApprovalWait, type Decider, type PipelineRun, type RunStatus, type RunSummary } from '../domain/runs.js';
import { steadyNow } from '../core/clock.js';

export interface PipelineEngineOptions {
  store: PipelineStore;
  bus: Bus;
  log: Logger;
  /** The pipelines of the file (and code). */
  pipelines: Map<string, Pipeline>;
  /** Validates a pipeline defined over the API; without it, the API cannot define pipelines. */
  compile?: (def: PipelineDefinition) => Pipeline;
  /** Runs a step of each kind that works (an approval step only waits, and needs no runner). */
  runners: Record<WorkKind, StepRunner>;
  /** Steps executing at once across all runs: the background lane's budget. */
  concurrency: number;
  /** This node, as the owner of the runs it drives; a node restarting under the same name takes its runs back at once. */
  owner: string;
  /**
   * How long this node's hold on a run lasts unless renewed, in ms. Leases are renewed (and runs
   * orphaned by a dead node taken over) every third of it, so another node resumes a dead node's
   * runs within about 1.3 × this.
   */
  runLeaseMs: number;
  limits: { maxPayloadBytes: number; maxPayloadDepth: number; maxBatch: number };
  now?: () => number;
  random?: () => number;
}

export interface RunInput {
  input?: unknown;
  idempotencyKey?: string;
}

/** A run this process is driving: its definition, its latest state, and what it has in flight. */
interface ActiveRun {
  pipeline: Pipeline;
  run: PipelineRun;
  /** Aborted when the run is cancelled or fails, and on shutdown: ends every step in flight. */
  controller: AbortController;
  inFlight: Set<string>;
  retryTimers: Map<string, NodeJS.Timeout>;
}

/** Why a step's signal fired, so its failure is handled (or deliberately not) accordingly. */
class Shutdown extends Error {}
class RunEnded extends Error {}

/**
 * Drives pipeline runs. Each step's outcome is written to the PipelineStore before anything reacts
 * to it, so the store is the run's truth: on start the engine reloads every unfinished run and
 * carries on from its steps' recorded states — completed steps are never run again, a step that
 * was in flight when the server died runs again.
 *
 * Steps run in the background lane, a semaphore of `concurrency` slots shared by all runs, so that
 * pipeline work never takes more than its budget of the event loop and providers, whatever the
 * number of runs; runs beyond it simply wait for a slot.
 */
export class PipelineEngine {
  private readonly active = new Map<number, ActiveRun>();
  readonly lane: Semaphore;
  private readonly now: () => number;
  private readonly random: () => number;
  private stopping = false;
  private started = false;
  private leaseTimer: NodeJS.Timeout | undefined;
  private unsubscribe: (() => void)[] = [];
  /** Runs this node holds but cannot drive (their pipeline changed), logged once each. */
  private readonly unresumable = new Set<number>();
  /** The pipelines of the file and the versions defined over the API. */
  readonly definitions: PipelineDefinitions;

  constructor(private readonly options: PipelineEngineOptions) {
    this.lane = new Semaphore(options.concurrency);
    this.now = options.now ?? steadyNow;
    this.random = options.random ?? Math.random;
    const compile =
      options.compile ??
      ((def: PipelineDefinition): Pipeline => {
        throw new Error(`pipeline ${def.name}: this engine takes no pipelines defined over the API`);
      });
    this.definitions = new PipelineDefinitions({
      store: options.store,
      fixed: options.pipelines,
      compile,
      now: this.now,
      limits: { maxBytes: options.limits.maxPayloadBytes, maxDepth: options.limits.maxPayloadDepth },
    });
  }

  /**
   * Takes over every unfinished run that is free to take (its own, nobody's, or one whose node died),
   * then keeps its leases and watches for runs orphaned by other nodes.
   */
  async start(): Promise<void> {
    this.started = true;
    const { bus } = this.options;
    // A decision on an approval may be made on any node; the node driving the run learns it here.
    this.unsubscribe.push(
      bus.subscribe('pipeline.step.completed', (e) => {
        const active = this.active.get(e.run.id);
        if (active?.run.steps.find((s) => s.name === e.step)?.status === 'waiting') void this.refresh(active);
      }),
      bus.subscribe('pipeline.run.finished', (e) => {
        if (this.active.has(e.run.id) && FINISHED_RUN_STATUSES.has(e.run.status)) this.end(e.run.id, new RunEnded('the run finished on another node'));
      }),
    );
    await this.acquireRuns();
    const every = Math.max(50, Math.floor(this.options.runLeaseMs / 3));
    this.leaseTimer = setInterval(() => void this.keepLeases(), every);
    this.leaseTimer.unref();
  }

  /**
   * Stops driving runs without recording their steps: what is in flight stays `running` in the store,
   * and its lease is given up, for the next start of this node or for another node to resume at once.
   */
  async stop(): Promise<void> {
    this.stopping = true;
    clearInterval(this.leaseTimer);
    for (const off of this.unsubscribe.splice(0)) off();
    const ids = [...this.active.keys()];
    for (const active of this.active.values()) {
      for (const t of active.retryTimers.values()) clearTimeout(t);
      active.controller.abort(new Shutdown('the server is shutting down'));
    }
    this.active.clear();
    if (ids.length > 0) {
      await this.options.store.runRelease({ owner: this.options.owner, ids }).catch((err) => {
        this.options.log.warn({ err }, 'could not give up the leases of pipeline runs; other nodes take them when they expire');
      });
    }
  }

  /** Renews this node's leases (ending the runs it no longer holds), then takes over orphaned runs. */
  private async keepLeases(): Promise<void> {
    const { store, owner, runLeaseMs: leaseMs } = this.options;
    try {
      const ids = [...this.active.keys()];
      if (ids.length > 0) {
        const held = new Map((await store.runRenew({ owner, leaseMs, ids, now: this.now() })).map((r) => [r.id, r.updatedAt]));
        for (const id of ids) {
          const active = this.active.get(id);
          if (!active) continue;
          const updatedAt = held.get(id);
          if (updatedAt === undefined) this.end(id, new RunEnded('the run finished or is driven by another node'));
          // Changed by a write this node did not make (an approval decided on a node the bus did
          // not reach): carry on from the store. Different, not later: nodes' clocks differ.
          else if (updatedAt !== active.run.updatedAt && this.awaitsDecision(active)) void this.refresh(active);
        }
      }
      if (!this.stopping) await this.acquireRuns();
    } catch (err) {
      if (!this.stopping && !isDependencyUnavailable(err)) this.options.log.warn({ err }, 'could not renew pipeline run leases; retrying');
    }
  }

  /** Leases every unfinished run free to take, a page at a time, and drives those not driven yet. */
  private async acquireRuns(): Promise<void> {
    const { store, owner, runLeaseMs: leaseMs } = this.options;
    let afterId = 0;
    for (;;) {
      const runs = await store.runAcquire({ owner, leaseMs, afterId, limit: 500, now: this.now() });
      if (runs.length === 0 || this.stopping) return;
      const resumable: [Pipeline, PipelineRun][] = [];
      for (const run of runs) {
        afterId = run.id;
        if (this.active.has(run.id)) continue;
        // A run of an API-defined pipeline resumes on its own version, whatever the newest is.
        const pipeline = await this.definitions.ofRun(run);
        // A run of the file's pipeline is resumed only on the steps it was started with; a pipeline
        // redefined since then would have it skip or repeat work, so it is left as it is, and said so.
        const same = pipeline && pipeline.steps.length === run.steps.length && pipeline.steps.every((s, i) => s.name === run.steps[i].name);
        if (pipeline && same) resumable.push([pipeline, run]);
        else if (!this.unresumable.has(run.id)) {
          this.unresumable.add(run.id);
          this.options.log.error({ runId: run.id, pipeline: run.pipeline }, 'cannot resume a run: its pipeline is no longer defined, or its steps changed');
        }
      }
      this.driveInSlices(resumable);
    }
  }

  /**
   * Starts runs of the pipeline `namespace` has by that name (the file's, or its own API version),
   * in that namespace; `batch` says the inputs' errors name their index.
   */
  async startRuns(
    pipelineName: string,
    inputs: RunInput[],
    { batch = false, namespace = DEFAULT_NAMESPACE }: { batch?: boolean; namespace?: string } = {},
  ): Promise<{ run: PipelineRun; created: boolean }[]> {
    const { pipeline, version } = await this.definitions.current(namespace, pipelineName);
    if (this.stopping) throw new FleetError('FLEETD_ERR_SHUTTING_DOWN', 'the server is shutting down');
    if (inputs.length > this.options.limits.maxBatch) {
      throw invalid('runs', `a batch holds at most ${this.options.limits.maxBatch} runs`, { count: inputs.length });
    }
    const { maxPayloadBytes: maxBytes, maxPayloadDepth: maxDepth } = this.options.limits;
    inputs.forEach((r, i) => checkJsonValue(r.input ?? null, 'input', { maxBytes, maxDepth }, batch ? { index: i } : {}));
    const runs = inputs.map((r) => {
      const run = { pipeline: pipeline.name, input: r.input ?? null, idempotencyKey: r.idempotencyKey ?? null };
      return {
        ...run,
        namespace,
        requestHash: run.idempotencyKey === null ? null : runRequestHash(run),
        steps: pipeline.steps.map((s) => s.name),
        pipelineVersion: version,
      };
    });
    const results = await this.options.store.runInsertMany({
      runs,
      lease: { owner: this.options.owner, leaseMs: this.options.runLeaseMs },
      now: this.now(),
      onRepeat: repeatCheck('run', runs),
    });
    const created = results.filter((r) => r.created).map((r) => r.run);
    for (const run of created) this.options.bus.publish('pipeline.run.created', { run: summarizeRun(run) });
    if (this.started && !this.stopping) this.driveInSlices(created.map((run) => [pipeline, run]));
    return results;
  }

  /** By id, whatever its namespace: routes check the asker may see it. */
  async get(id: number): Promise<PipelineRun> {
    const run = await this.options.store.runGet({ id });
    if (!run) throw notFound('run', id);
    return run;
  }

  list(params: { namespaces?: NamespaceFilter; pipeline?: string; status?: RunStatus; limit: number; cursor?: string }): Promise<Page<PipelineRun>> {
    return this.options.store.runList(params);
  }

  async cancel(id: number): Promise<PipelineRun> {
    const run = await this.options.store.runCancel({ runId: id, now: this.now() });
    if (!run) {
      const existing = await this.get(id);
      throw new FleetError('FLEETD_ERR_RUN_STATE', `run ${id} is ${existing.status} and cannot be cancelled`, { runId: id, status: existing.status });
    }
    this.end(id, new RunEnded('the run was cancelled'));
    this.options.bus.publish('pipeline.run.finished', { run: summarizeRun(run) });
    traceRunFinished(run);
    return run;
  }

  /** Steps in flight and runs being driven, for /v1/stats. */
  usage(): { runsActive: number; stepsRunning: number; stepsWaitingForLane: number } {
    return { runsActive: this.active.size, stepsRunning: this.lane.inUse, stepsWaitingForLane: this.lane.queued };
  }

  /**
   * Starts driving many runs a slice at a time, yielding to the event loop between slices: a batch
   * of thousands of runs must not hold up the requests that arrive meanwhile.
   */
  private driveInSlices(runs: [Pipeline, PipelineRun][], slice = 50): void {
    let i = 0;
    const next = () => {
      if (this.stopping) return;
      for (const end = Math.min(i + slice, runs.length); i < end; i++) this.drive(runs[i][0], runs[i][1]);
      if (i < runs.length) setImmediate(next);
    };
    next();
  }

  private drive(pipeline: Pipeline, run: PipelineRun): void {
    const active: ActiveRun = { pipeline, run, controller: new AbortController(), inFlight: new Set(), retryTimers: new Map() };
    this.active.set(run.id, active);
    this.advance(active);
  }

  private end(runId: number, reason: Error): void {
    const active = this.active.get(runId);
    if (!active) return;
    this.active.delete(runId);
    for (const t of active.retryTimers.values()) clearTimeout(t);
    active.controller.abort(reason);
  }

  /** Starts every step whose needs are met; completes the run when every step has. */
  private advance(active: ActiveRun): void {
    if (this.active.get(active.run.id) !== active) return;
    const state = new Map(active.run.steps.map((s) => [s.name, s]));
    if (active.run.steps.every((s) => s.status === 'completed')) {
      void this.complete(active);
      return;
    }
    for (const step of active.pipeline.steps) {
      const s = state.get(step.name);
      if (!s || (s.status !== 'pending' && s.status !== 'running' && s.status !== 'waiting')) continue;
      if (active.inFlight.has(step.name) || active.retryTimers.has(step.name)) continue;
      if (!step.needs.every((n) => state.get(n)?.status === 'completed')) continue;
      if (step.kind === 'approval') {
        // Waits outside the background lane: a person deciding holds no slot that work could use.
        active.inFlight.add(step.name);
        void this.awaitApproval(active, step);
        continue;
      }
      const wait = (s.nextAttemptAt ?? 0) - this.now();
      if (wait > 0) {
        active.retryTimers.set(
          step.name,
          // Capped: a longer delay would overflow the timer and fire at once; advance() re-checks the time.
          setTimeout(() => {
            active.retryTimers.delete(step.name);
            this.advance(active);
          }, Math.min(wait, 2 ** 31 - 1)),
        );
        continue;
      }
      active.inFlight.add(step.name);
      void this.runStep(active, step).finally(() => {
        active.inFlight.delete(step.name);
        this.advance(active);
      });
    }
  }

  private async runStep(active: ActiveRun, step: CompiledStep): Promise<void> {
    const { store, bus } = this.options;
    const runId = active.run.id;
    let release: () => void;
    try {
      release = await this.lane.acquire(active.controller.signal);
    } catch {
      return;
    }
    try {
      const started = await store.stepStart({ runId, step: step.name, owner: this.options.owner, now: this.now() });
      if (!started) return this.end(runId, new RunEnded('the run finished, or is driven by another node'));
      active.run = started;
      const attempt = started.steps.find((s) => s.name === step.name)!.attempts;
      bus.publish('pipeline.step.started', { run: summarizeRun(started), step: step.name, attempt });
      const span = startStepSpan(started, step.name, attempt);
      const timeout = AbortSignal.timeout(step.policy.timeoutMs);
      const signal = AbortSignal.any([active.controller.signal, timeout]);
      const ctx: StepContext = {
        input: started.input,
        steps: Object.fromEntries(started.steps.filter((s) => s.status === 'completed').map((s) => [s.name, s.output])),
        run: { id: runId, namespace: started.namespace, pipeline: started.pipeline },
        step,
        attempt,
        signal,
      };
      let output: unknown;
      try {
        output = await withAbort(this.options.runners[step.kind as WorkKind](ctx), signal);
        checkJsonValue(output ?? null, 'output', { maxBytes: this.options.limits.maxPayloadBytes, maxDepth: this.options.limits.maxPayloadDepth });
      } catch (err) {
        // Shutdown and the run's end are not the step's failure: nothing is recorded for them.
        if (active.controller.signal.aborted) return endStepSpan(span, 'cancelled');
        const failure = timeout.aborted ? new StepError(`no result within ${step.policy.timeoutMs} ms`, true, undefined, { kind: 'timeout' }) : err;
        endStepSpan(span, 'failed', failure);
        await this.failStep(active, step, attempt, failure);
        return;
      }
      endStepSpan(span, 'completed');
      const done = await store.stepComplete({ runId, step: step.name, owner: this.options.owner, output: output ?? null, now: this.now() });
      if (!done) return this.end(runId, new RunEnded('the run finished, or is driven by another node'));
      active.run = done;
      bus.publish('pipeline.step.completed', { run: summarizeRun(done), step: step.name, attempt });
    } catch (err) {
      if (this.stopping) return;
      // The run pauses: it stays leased to this node, whose lease keeper takes it up again (the
      // step in flight runs again) once the store answers, or another node's takes it over.
      if (!isDependencyUnavailable(err)) this.options.log.error({ err, runId, step: step.name }, 'pipeline step could not be recorded');
      this.end(runId, new RunEnded('the run could not be recorded'));
    } finally {
      release!();
    }
  }

  /** Records the approval step as waiting (unless it was already, after a restart) and arms its timeout. */
  private async awaitApproval(active: ActiveRun, step: CompiledStep & { kind: 'approval' }): Promise<void> {
    const { store, bus, owner } = this.options;
    const runId = active.run.id;
    try {
      const now = this.now();
      const scope = {
        input: active.run.input,
        steps: Object.fromEntries(active.run.steps.filter((s) => s.status === 'completed').map((s) => [s.name, s.output])),
        run: { id: runId, namespace: active.run.namespace, pipeline: active.run.pipeline },
      };
      const approval: ApprovalWait = {
        prompt: renderText(step.prompt, scope),
        decideBy: now + step.policy.timeoutMs,
        onTimeout: step.onTimeout ?? 'reject',
        approvers: step.approvers ?? null,
      };
      const run = await store.stepAwait({ runId, step: step.name, owner, now, approval });
      if (!run) return this.end(runId, new RunEnded('the run finished, or is driven by another node'));
      // Decided (and refreshed) meanwhile: the refresh has moved the run on already.
      if (this.active.get(runId) !== active || !active.inFlight.has(step.name)) return;
      active.run = run;
      const waiting = run.steps.find((s) => s.name === step.name)!;
      bus.publish('pipeline.step.waiting', { run: summarizeRun(run), step: step.name, attempt: waiting.attempts });
      this.armApprovalTimeout(active, step.name, waiting.approval!);
    } catch (err) {
      if (this.stopping) return;
      if (!isDependencyUnavailable(err)) this.options.log.error({ err, runId, step: step.name }, 'approval step could not be recorded');
      this.end(runId, new RunEnded('the run could not be recorded'));
    }
  }

  private armApprovalTimeout(active: ActiveRun, step: string, approval: ApprovalWait): void {
    const wait = approval.decideBy - this.now();
    active.retryTimers.set(
      step,
      // Capped like retries; a timer that fires before the deadline (a wait of weeks) arms again.
      setTimeout(() => {
        active.retryTimers.delete(step);
        if (this.active.get(active.run.id) !== active) return;
        if (this.now() < approval.decideBy) return this.armApprovalTimeout(active, step, approval);
        this.decide({ runId: active.run.id, step, approved: approval.onTimeout === 'approve', by: { kind: 'timeout' }, comment: null }).catch((err) => {
          // Decided meanwhile (perhaps on another node while the bus was away): carry on from the store.
          if (err instanceof FleetError && err.code === 'FLEETD_ERR_STEP_NOT_WAITING') return void this.refresh(active);
          if (!this.stopping && !isDependencyUnavailable(err)) this.options.log.error({ err, runId: active.run.id, step }, 'approval timeout could not be recorded');
          if (!this.stopping) this.armApprovalTimeout(active, step, { ...approval, decideBy: this.now() + 1_000 });
        });
      }, Math.min(Math.max(wait, 0), 2 ** 31 - 1)),
    );
  }

  /**
   * Whether `asker` may decide the step, without deciding: what the dashboard asks to show its buttons.
   * Undefined when the step is not waiting for a decision.
   */
  async mayDecide(runId: number, step: string, asker: Asker): Promise<boolean | undefined> {
    const run = await this.get(runId);
    const state = run.steps.find((s) => s.name === step);
    if (!state) throw new FleetError('FLEETD_ERR_NOT_FOUND', `run ${runId} has no step ${step}`, { runId, step });
    return state.status === 'waiting' && state.approval ? mayDecide(state.approval.approvers, asker) : undefined;
  }

  /**
   * Decides a waiting approval step, from any node: as `asker` (checked against the step's
   * approvers) or by its timeout. Approved, the step completes with the decision as its output and
   * the run goes on; rejected, the step fails with it and the run fails. Of two decisions at once,
   * one wins; the other, like a decision on a step that is not waiting, is FLEETD_ERR_STEP_NOT_WAITING.
   */
  async decide(params: { runId: number; step: string; approved: boolean; comment: string | null } & ({ asker: Asker } | { by: Decider })): Promise<PipelineRun> {
    const { runId, step, approved } = params;
    const run = await this.get(runId);
    const state = run.steps.find((s) => s.name === step);
    if (!state) throw new FleetError('FLEETD_ERR_NOT_FOUND', `run ${runId} has no step ${step}`, { runId, step });
    const notWaiting = (status: string) =>
      new FleetError('FLEETD_ERR_STEP_NOT_WAITING', `step ${step} of run ${runId} is ${status}, not waiting for a decision`, { runId, step, status });
    if (state.status !== 'waiting' || !state.approval) throw notWaiting(state.status);
    if ('asker' in params && !mayDecide(state.approval.approvers, params.asker)) {
      throw new FleetError('FLEETD_ERR_FORBIDDEN', `this credential may not decide step ${step} of run ${runId}`, {
        runId,
        step,
        approvers: state.approval.approvers,
      });
    }
    const now = this.now();
    const by = 'asker' in params ? deciderOf(params.asker) : params.by;
    const decided = await this.options.store.stepDecide({ runId, step, approved, output: decision(approved, by, params.comment, now), now });
    if (!decided) {
      const current = await this.get(runId);
      throw notWaiting(current.steps.find((s) => s.name === step)?.status ?? 'gone');
    }
    const { bus } = this.options;
    // The run's driver, on this node or another, moves on when these arrive.
    if (approved) bus.publish('pipeline.step.completed', { run: summarizeRun(decided), step, attempt: state.attempts });
    else {
      bus.publish('pipeline.step.failed', { run: summarizeRun(decided), step, attempt: state.attempts, willRetry: false, error: { ...(decided.steps.find((s) => s.name === step)!.error as Record<string, unknown>) } });
      bus.publish('pipeline.run.finished', { run: summarizeRun(decided) });
      traceRunFinished(decided);
    }
    return decided;
  }

  private awaitsDecision(active: ActiveRun): boolean {
    return active.run.steps.some((s) => s.status === 'waiting');
  }

  /** Reads the run again after a decision this node did not record itself, and carries on from it. */
  private async refresh(active: ActiveRun): Promise<void> {
    const runId = active.run.id;
    let run: PipelineRun | undefined;
    try {
      run = await this.options.store.runGet({ id: runId });
    } catch (err) {
      // The lease keeper resumes the run once the store answers.
      if (!isDependencyUnavailable(err)) this.options.log.error({ err, runId }, 'pipeline run could not be read');
      return this.end(runId, new RunEnded('the run could not be read'));
    }
    if (this.active.get(runId) !== active) return;
    if (!run || isFinished(run)) return this.end(runId, new RunEnded('the run finished'));
    active.run = run;
    for (const step of active.pipeline.steps) {
      if (step.kind !== 'approval' || run.steps.find((s) => s.name === step.name)?.status === 'waiting') continue;
      clearTimeout(active.retryTimers.get(step.name));
      active.retryTimers.delete(step.name);
      active.inFlight.delete(step.name);
    }
    this.advance(active);
  }

  private async failStep(active: ActiveRun, step: CompiledStep, attempt: number, err: unknown): Promise<void> {
    const { store, bus } = this.options;
    const runId = active.run.id;
    const retryable = err instanceof StepError || err instanceof ProviderError ? err.retryable : true;
    const retryAfterMs = err instanceof StepError ? err.retryAfterMs : err instanceof ProviderError ? err.details.retryAfterMs : undefined;
    const error = describeError(err, attempt);
    if (retryable && attempt < step.policy.attempts) {
      const backoff = retryDelay(attempt, step.policy.backoffMs, step.policy.backoffMaxMs, this.random);
      const nextAttemptAt = this.now() + Math.max(backoff, retryAfterMs ?? 0);
      const run = await store.stepRetryLater({ runId, step: step.name, owner: this.options.owner, error, nextAttemptAt, now: this.now() });
      if (!run) return this.end(runId, new RunEnded('the run finished, or is driven by another node'));
      active.run = run;
      bus.publish('pipeline.step.failed', { run: summarizeRun(run), step: step.name, attempt, willRetry: true, error });
      return;
    }
    const run = await store.stepFail({ runId, step: step.name, owner: this.options.owner, error, now: this.now() });
    this.end(runId, new RunEnded(`step ${step.name} failed`));
    if (!run) return;
    bus.publish('pipeline.step.failed', { run: summarizeRun(run), step: step.name, attempt, willRetry: false, error });
    bus.publish('pipeline.run.finished', { run: summarizeRun(run) });
    traceRunFinished(run);
  }

  private async complete(active: ActiveRun): Promise<void> {
    const runId = active.run.id;
    this.active.delete(runId);
    const outputs = new Map(active.run.steps.map((s) => [s.name, s.output]));
    const sinks = active.pipeline.sinks;
    const output = sinks.length === 1 ? outputs.get(sinks[0]) : Object.fromEntries(sinks.map((n) => [n, outputs.get(n)]));
    try {
      const run = await this.options.store.runComplete({ runId, owner: this.options.owner, output, now: this.now() });
      if (run) {
        this.options.bus.publish('pipeline.run.finished', { run: summarizeRun(run) });
        traceRunFinished(run);
      }
    } catch (err) {
      if (!this.stopping && !isDependencyUnavailable(err)) this.options.log.error({ err, runId }, 'pipeline run could not be completed');
    }
  }
}

export function summarizeRun(run: PipelineRun): RunSummary {
  return { id: run.id, namespace: run.namespace, pipeline: run.pipeline, status: run.status };
}

export const isFinished = (run: PipelineRun): boolean => FINISHED_RUN_STATUSES.has(run.status);

function describeError(err: unknown, attempt: number): Record<string, unknown> {
  if (err instanceof ProviderError) return { attempt, ...err.toJSON() };
  if (err instanceof StepError) return { attempt, message: err.message, retryable: err.retryable, ...err.details };
  if (err instanceof FleetError) return { attempt, message: err.message, code: err.code, ...err.details };
  return { attempt, message: err instanceof Error ? err.message : String(err) };
}

/** Settles with the signal's reason as soon as it fires, even if the step's code ignores the signal. */
function withAbort<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}
