/**
 * OpenTelemetry tracing: off unless OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
 * is set. Then the SDK is loaded (never before: a fleetd without tracing does not even import it)
 * and spans go to the endpoint over OTLP/HTTP with JSON encoding. While off, every hook here is a
 * check of one variable.
 *
 * What is traced:
 * - each HTTP request and each WebSocket message handled (server/tracing.ts calls `inSpan`);
 *   a request's `traceparent` header makes its span a child of the caller's;
 * - each task, as one trace of its own: the root span `task <type>` from submit to the task's end,
 *   a `task.submit` span (linked to the request that submitted it), and one `task.attempt` span per
 *   claim, from the claim to completion, failure or expiry. A leased task carries `traceparent`
 *   (the attempt span's context) to its agent, whose own spans join the task's trace that way;
 * - each pipeline run, the same way: the root span `pipeline <name>` and one span per step attempt.
 *
 * A task's life crosses nodes and restarts (submitted on one node, claimed on a second, completed
 * on a third), and fleetd keeps no trace state in its store. So the ids of a task's trace and of
 * its root and attempt spans are derived from the task itself (its id and creation time), on any
 * node; each of these spans is emitted when it ends, with its start time from the task's own record.
 */
import { createHash } from 'node:crypto';
import { context, INVALID_SPAN_CONTEXT, propagation, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, TraceFlags, type Attributes, type Context, type Link, type Span, type Tracer } from '@opentelemetry/api';
import { type Bus, subscribeOwn } from '../bus/bus.js';
import type { PipelineRun } from '../domain/runs.js';
import type { TaskSummary } from '../domain/types.js';
import { setTraceparentSource } from '../domain/wire.js';

let tracer: Tracer | undefined;
/** What `inSpan` hands its function while tracing is off. */
const NOT_RECORDING = trace.wrapSpanContext(INVALID_SPAN_CONTEXT);

/** The ids the next span gets, when they are derived rather than random: set just before a synchronous startSpan. */
const derived: { traceId?: string; spanId?: string } = {};

export function tracingEnabled(): boolean {
  return tracer !== undefined;
}

/**
 * Loads the SDK and starts exporting when the environment names an OTLP endpoint; returns the
 * function that flushes and stops it (a no-op when tracing is off). The service is `fleetd` unless
 * OTEL_SERVICE_NAME says otherwise; the other OTEL_* variables of the SDK and exporter apply
 * (OTEL_EXPORTER_OTLP_HEADERS, OTEL_BSP_SCHEDULE_DELAY, OTEL_TRACES_SAMPLER, …).
 */
export async function startTracing(env: NodeJS.ProcessEnv = process.env): Promise<() => Promise<void>> {
  const endpoint = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT || (env.OTEL_EXPORTER_OTLP_ENDPOINT && `${env.OTEL_EXPORTER_OTLP_ENDPOINT.replace(/\/+$/, '')}/v1/traces`);
  if (!endpoint || env.OTEL_SDK_DISABLED === 'true' || tracer) return async () => {};
  const [{ NodeTracerProvider, BatchSpanProcessor, RandomIdGenerator }, { OTLPTraceExporter }, { detectResources, envDetector, resourceFromAttributes }] = await Promise.all([
    import('@opentelemetry/sdk-trace-node'),
    import('@opentelemetry/exporter-trace-otlp-http'),
    import('@opentelemetry/resources'),
  ]);
  const random = new RandomIdGenerator();
  const take = (key: 'traceId' | 'spanId'): string | undefined => {
    const id = derived[key];
    derived[key] = undefined;
    return id;
  };
  const provider = new NodeTracerProvider({
    // OTEL_RESOURCE_ATTRIBUTES (read by envDetector), with the service named by OTEL_SERVICE_NAME or `fleetd`.
    resource: detectResources({ detectors: [envDetector] }).merge(resourceFromAttributes({ 'service.name': env.OTEL_SERVICE_NAME || 'fleetd' })),
    idGenerator: {
      generateTraceId: () => take('traceId') ?? random.generateTraceId(),
      generateSpanId: () => take('spanId') ?? random.generateSpanId(),
    },
    spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter({ url: endpoint }))],
  });
  // The global provider, an AsyncLocalStorage context manager and the W3C traceparent propagator.
  provider.register();
  tracer = trace.getTracer('fleetd');
  setTraceparentSource(taskTraceparent);
  return async () => {
    tracer = undefined;
    setTraceparentSource(() => undefined);
    await provider.shutdown();
    trace.disable();
    context.disable();
    propagation.disable();
  };
}

/** Runs fn inside a new span (ended when fn, or the promise it returns, settles; an error is recorded); just fn while tracing is off. */
export function inSpan<R>(name: string, options: { kind?: SpanKind; attributes?: Attributes }, fn: (span: Span) => R): R {
  if (!tracer) return fn(NOT_RECORDING);
  const span = tracer.startSpan(name, { kind: options.kind, attributes: options.attributes });
  const fail = (err: unknown): never => {
    span.recordException(err instanceof Error ? err : String(err));
    span.setStatus({ code: SpanStatusCode.ERROR, message: err instanceof Error ? err.message : String(err) });
    span.end();
    throw err;
  };
  return context.with(trace.setSpan(context.active(), span), () => {
    let result: R;
    try {
      result = fn(span);
    } catch (err) {
      return fail(err);
    }
    if (!(result instanceof Promise)) {
      span.end();
      return result;
    }
    return result.then((value) => {
      span.end();
      return value;
    }, fail) as R;
  });
}

/**
 * Starts the span of a request or message this server handles, a child of the span its
 * `traceparent` header names (if any); returns it with the context to run the handling in.
 * Undefined while tracing is off.
 */
export function startServerSpan(name: string, headers: Record<string, string | string[] | undefined>, attributes: Attributes): { span: Span; context: Context } | undefined {
  if (!tracer) return undefined;
  const parent = propagation.extract(ROOT_CONTEXT, headers);
  const span = tracer.startSpan(name, { kind: SpanKind.SERVER, attributes }, parent);
  return { span, context: trace.setSpan(parent, span) };
}

// --- Tasks ---------------------------------------------------------------------------------------

/** 16 bytes (trace) or 8 bytes (span) of hex derived from what identifies the thing traced. */
function derivedId(bytes: 16 | 8, ...parts: (string | number)[]): string {
  return createHash('sha256').update(parts.join('\0')).digest('hex').slice(0, bytes * 2);
}

interface TaskIdentity {
  id: number;
  createdAt: number;
}

/** The trace of a task: its id and creation time tell it apart from every other task, on every node. */
const taskTraceId = (t: TaskIdentity) => derivedId(16, 'fleetd.task', t.id, t.createdAt);
const taskRootSpanId = (t: TaskIdentity) => derivedId(8, 'fleetd.task', t.id, t.createdAt, 'root');
const taskAttemptSpanId = (t: TaskIdentity, attempt: number) => derivedId(8, 'fleetd.task', t.id, t.createdAt, 'attempt', attempt);

/** A context whose parent is the given span of a derived trace, wherever that span was (or will be) emitted. */
function derivedParent(traceId: string, spanId: string): Context {
  return trace.setSpanContext(ROOT_CONTEXT, { traceId, spanId, traceFlags: TraceFlags.SAMPLED, isRemote: true });
}

/** Starts a span with derived ids (a trace's root when parent is undefined). */
function startDerivedSpan(name: string, ids: { traceId: string; spanId: string; parentSpanId?: string }, options: { startTime: number; attributes: Attributes; links?: Link[] }): Span {
  const parent = ids.parentSpanId ? derivedParent(ids.traceId, ids.parentSpanId) : ROOT_CONTEXT;
  if (!ids.parentSpanId) derived.traceId = ids.traceId;
  derived.spanId = ids.spanId;
  try {
    return tracer!.startSpan(name, { kind: SpanKind.INTERNAL, ...options }, parent);
  } finally {
    derived.traceId = derived.spanId = undefined;
  }
}

/**
 * The `traceparent` a leased task carries to its agent: the current attempt's span, so that the
 * agent's spans (and the requests it sends with it) join the task's trace. Undefined for a task
 * that is not leased.
 */
function taskTraceparent(t: TaskIdentity & { status: string; attempts: number }): string | undefined {
  if (t.status !== 'leased') return undefined;
  return `00-${taskTraceId(t)}-${taskAttemptSpanId(t, t.attempts)}-01`;
}

const taskAttributes = (t: TaskSummary): Attributes => ({
  'fleetd.task.id': t.id,
  'fleetd.task.type': t.type,
  'fleetd.task.status': t.status,
  'fleetd.task.attempts': t.attempts,
  'fleetd.task.priority': t.priority,
});

/** Ends the attempt the task was in (started at its claim), with the outcome its event reports. */
function emitAttempt(t: TaskSummary, outcome: string, failed: boolean): void {
  if (t.claimedAt === null || t.attempts < 1) return;
  const traceId = taskTraceId(t);
  const span = startDerivedSpan(
    'task.attempt',
    { traceId, spanId: taskAttemptSpanId(t, t.attempts), parentSpanId: taskRootSpanId(t) },
    { startTime: t.claimedAt, attributes: { ...taskAttributes(t), 'fleetd.task.attempt': t.attempts, 'fleetd.agent.id': t.agentId ?? '', 'fleetd.task.outcome': outcome } },
  );
  if (failed) span.setStatus({ code: SpanStatusCode.ERROR, message: outcome });
  span.end(t.updatedAt);
}

/** The task's root span, from submit to its end. */
function emitTaskRoot(t: TaskSummary): void {
  const span = startDerivedSpan(`task ${t.type}`, { traceId: taskTraceId(t), spanId: taskRootSpanId(t) }, { startTime: t.createdAt, attributes: taskAttributes(t) });
  if (t.status !== 'completed') span.setStatus({ code: SpanStatusCode.ERROR, message: t.status });
  span.end(t.updatedAt);
}

/**
 * Traces every task this node acts on, from the bus's events (published after each commit, in the
 * request that caused it). Events another node published and this bus relays are that node's to trace.
 */
export function traceTasks(bus: Bus): () => void {
  if (!tracer) return () => {};
  const offs = [
    subscribeOwn(bus, 'task.created', ({ task }) => {
      // The request that submitted the task is in another trace: linked, not parent.
      const request = trace.getSpanContext(context.active());
      const span = startDerivedSpan(
        'task.submit',
        { traceId: taskTraceId(task), spanId: derivedId(8, 'fleetd.task', task.id, task.createdAt, 'submit'), parentSpanId: taskRootSpanId(task) },
        { startTime: task.createdAt, attributes: taskAttributes(task), links: request ? [{ context: request }] : [] },
      );
      span.end(task.createdAt);
    }),
    subscribeOwn(bus, 'task.completed', ({ task }) => {
      emitAttempt(task, 'completed', false);
      emitTaskRoot(task);
    }),
    subscribeOwn(bus, 'task.failed', ({ task }) => emitAttempt(task, 'failed', true)),
    subscribeOwn(bus, 'task.requeued', ({ task, reason }) => emitAttempt(task, reason, true)),
    subscribeOwn(bus, 'task.dead', ({ task }) => {
      emitAttempt(task, 'dead', true);
      emitTaskRoot(task);
    }),
    subscribeOwn(bus, 'task.cancelled', ({ task }) => emitTaskRoot(task)),
  ];
  return () => offs.forEach((off) => off());
}

// --- Pipelines -----------------------------------------------------------------------------------

const runTraceId = (r: TaskIdentity) => derivedId(16, 'fleetd.run', r.id, r.createdAt);
const runRootSpanId = (r: TaskIdentity) => derivedId(8, 'fleetd.run', r.id, r.createdAt, 'root');

/**
 * Starts the span of a step's attempt, a child of its run's root span; the caller ends it with
 * `endStepSpan`. Undefined while tracing is off.
 */
export function startStepSpan(run: PipelineRun, step: string, attempt: number): Span | undefined {
  if (!tracer) return undefined;
  return tracer.startSpan(
    `step ${step}`,
    { attributes: { 'fleetd.run.id': run.id, 'fleetd.pipeline': run.pipeline, 'fleetd.step': step, 'fleetd.step.attempt': attempt } },
    derivedParent(runTraceId(run), runRootSpanId(run)),
  );
}

export function endStepSpan(span: Span | undefined, outcome: 'completed' | 'failed' | 'cancelled', error?: unknown): void {
  if (!span) return;
  span.setAttribute('fleetd.step.outcome', outcome);
  if (outcome !== 'completed') span.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof Error ? error.message : outcome });
  span.end();
}

/** The run's root span, from its creation to its end: emitted once the run has finished. */
export function traceRunFinished(run: PipelineRun): void {
  if (!tracer) return;
  const span = startDerivedSpan(
    `pipeline ${run.pipeline}`,
    { traceId: runTraceId(run), spanId: runRootSpanId(run) },
    { startTime: run.createdAt, attributes: { 'fleetd.run.id': run.id, 'fleetd.pipeline': run.pipeline, 'fleetd.run.status': run.status } },
  );
  if (run.status !== 'completed') span.setStatus({ code: SpanStatusCode.ERROR, message: run.status });
  span.end(run.finishedAt ?? run.updatedAt);
}
