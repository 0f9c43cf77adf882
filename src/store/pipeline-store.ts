import type { NamespaceFilter } from '../domain/namespaces.js';
import type { Page } from '../domain/types.js';
import type { ApprovalWait, PipelineRun, PipelineVersion, RunStatus } from '../domain/runs.js';
import type { RepeatCheck } from './store.js';

/**
 * The storage contract of pipeline runs, kept apart from `Store` so that a driver can add pipelines
 * on its own schedule. It speaks the run's behaviour (start a step, finish it, fail the run), and
 * every write is atomic and durable when its promise resolves: a step's output is on disk before
 * the next step starts, which is what lets a restarted server resume without repeating it.
 *
 * Writes on a run that is already finished (e.g. cancelled while a step was in flight), or that
 * another node has taken over, change nothing and return `undefined`, so that a late result can
 * never revive a cancelled run nor repeat a step. With several nodes, each run is driven by one node
 * at a time: the node holding its lease (owner and expiry), renewed while it drives the run.
 */
export interface PipelineStore {
  /**
   * Inserts runs in order, all or nothing, each with its steps `pending` and leased to `lease.owner`
   * (the node that will drive them). A run whose idempotency key exists already in its namespace
   * is not inserted again (another namespace's key is another key): `onRepeat` is called with the existing run (inside the write: a refusal writes nothing
   * of the batch) and, unless it throws, the existing run is returned with `created: false`.
   */
  runInsertMany(params: { runs: RunInsertParams[]; lease: RunLease; now: number; onRepeat: RepeatCheck }): Promise<{ run: PipelineRun; created: boolean }[]>;
  /** By id, whatever its namespace: the route says whether the asker may see it. */
  runGet(params: { id: number }): Promise<PipelineRun | undefined>;
  /** Newest first, of the namespaces asked for (all without the filter). */
  runList(params: RunListParams): Promise<Page<PipelineRun>>;
  /**
   * Leases up to `limit` unfinished runs (queued or running) of every namespace, oldest first, to `owner`: runs nobody
   * holds, runs `owner` held already (a node restarting under the same name), and runs whose lease
   * expired (their node died), with ids after `afterId`. What a node starting, or watching for dead
   * nodes, takes over.
   */
  runAcquire(params: RunLease & { afterId: number; limit: number; now: number }): Promise<PipelineRun[]>;
  /**
   * Extends `owner`'s leases on these runs; returns those it still holds (unfinished and not taken
   * over), each with its updatedAt, by which the driver sees a change another node made (a decision).
   */
  runRenew(params: RunLease & { ids: number[]; now: number }): Promise<{ id: number; updatedAt: number }[]>;
  /** Gives up `owner`'s leases on these runs (a node shutting down), so that another node takes them at once. */
  runRelease(params: { owner: string; ids: number[] }): Promise<void>;
  /**
   * Marks the step running and counts the attempt; the run becomes `running`. A step found already
   * `running` was interrupted (a restart, or its node died): it resumes the same attempt (an agent
   * step then waits for the task it already dispatched) and the count does not change.
   */
  stepStart(params: StepWrite): Promise<PipelineRun | undefined>;
  stepComplete(params: StepWrite & { output: unknown }): Promise<PipelineRun | undefined>;
  /** A failed attempt with attempts left: the step waits until nextAttemptAt. */
  stepRetryLater(params: StepWrite & { error: unknown; nextAttemptAt: number }): Promise<PipelineRun | undefined>;
  /** A step out of attempts: it is `failed`, steps not yet done are `skipped`, and the run is `failed`. */
  stepFail(params: StepWrite & { error: unknown }): Promise<PipelineRun | undefined>;
  runComplete(params: { runId: number; owner: string; output: unknown; now: number }): Promise<PipelineRun | undefined>;
  /** Cancels a run that has not finished, whoever drives it; its unfinished steps become `cancelled`. */
  runCancel(params: { runId: number; now: number }): Promise<PipelineRun | undefined>;
  runCounts(): Promise<{ pipeline: string; status: RunStatus; count: number }[]>;
  /**
   * Deletes up to `limit` finished runs with their steps: those that finished before `before`,
   * then, with keepNewest, those beyond the keepNewest most recently finished. Returns how many went.
   */
  runDeleteFinished(params: { before: number; keepNewest?: number; limit: number }): Promise<number>;

  /**
   * Appends the next version of a pipeline defined over the API in a namespace (1 for a name new
   * there); a null definition records its deletion. With `onlyIfLive` (a deletion), nothing is
   * written unless the newest version has a definition, and undefined is returned. Versions of one
   * name in one namespace are numbered without gaps even when nodes append at once.
   */
  versionAppend(params: { namespace: string; name: string; definition: unknown; now: number; onlyIfLive?: boolean }): Promise<PipelineVersion | undefined>;
  /** The newest `limit` versions of a name in a namespace, newest first (deletions included). */
  versionList(params: { namespace: string; name: string; limit: number }): Promise<PipelineVersion[]>;
  versionGet(params: { namespace: string; name: string; version: number }): Promise<PipelineVersion | undefined>;
  /**
   * The newest version of every name, in each of the namespaces asked for (all without the
   * filter), whose newest version is not a deletion; by name, then namespace.
   */
  versionCurrent(params: { namespaces?: NamespaceFilter }): Promise<PipelineVersion[]>;

  /**
   * An approval step starts waiting: `pending` → `waiting` (an attempt counted), with what it waits
   * for. A step found `waiting` already (a restart) is left as it was, deadline included. Fenced by
   * the owner like every write of the run's driver.
   */
  stepAwait(params: StepWrite & { approval: ApprovalWait }): Promise<PipelineRun | undefined>;
  /**
   * Decides a waiting approval step, from any node (the run's driver or not): `approved` completes
   * it with `output`; `rejected` fails it with `output` as its output and error, skips the run's
   * unfinished steps and fails the run. Only a step still `waiting` is decided: of two decisions at
   * once one wins, and the other gets undefined, as does a step that is not waiting.
   */
  stepDecide(params: { runId: number; step: string; approved: boolean; output: unknown; now: number }): Promise<PipelineRun | undefined>;
}

/** A node's hold on the runs it drives. */
export interface RunLease {
  /** The node driving the run. */
  owner: string;
  /** How long the lease lasts from `now` unless renewed, in ms. */
  leaseMs: number;
}

/**
 * A write by the run's driver. It applies only while `owner` holds the run: a node that stalled past
 * its lease while another took the run over finds its late writes refused (undefined), and never
 * records a step twice.
 */
export interface StepWrite {
  runId: number;
  step: string;
  owner: string;
  now: number;
}

export interface RunInsertParams {
  namespace: string;
  pipeline: string;
  input: unknown;
  idempotencyKey: string | null;
  /** What the idempotency key is bound to (null without a key), computed by core. */
  requestHash: string | null;
  /** The pipeline's step names, in definition order. */
  steps: string[];
  /** The version of an API-defined pipeline; null for one of the file. */
  pipelineVersion: number | null;
}

export interface RunListParams {
  namespaces?: NamespaceFilter;
  pipeline?: string;
  status?: RunStatus;
  limit: number;
  cursor?: string;
}
