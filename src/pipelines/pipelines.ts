import type { Logger } from '../core/context.js';
import type { Fleet } from '../core/fleet.js';
import type { FleetdConfig } from '../config.js';
import { ProviderRegistry, type ProviderConfig } from '../providers/registry.js';
import type { PipelineStore } from '../store/pipeline-store.js';
import type { CodeFunction, Pipeline, PipelineDefinition, StepContext, StepRunner, WorkKind } from './definition.js';
import type { CaseStore } from '../store/case-store.js';
import { CaseService } from './cases.js';
import { PipelineEngine } from './engine.js';
import { RunCleaner } from './run-cleaner.js';
import { loadPipelinesFile } from './load.js';
import { TaskOutcomes, runAgentStep } from './steps/agent.js';
import { runEmbedStep } from './steps/embed.js';
import { runHttpStep } from './steps/http.js';
import { runLlmStep } from './steps/llm.js';
import { renderText } from './template.js';
import { PipelineDefinitionError, compilePipeline } from './validate.js';

/** Pipelines, providers and functions given in code; the pipelines file (config.pipelinesFile) adds to them. */
export interface PipelineSetup {
  providers?: ProviderConfig[];
  pipelines?: PipelineDefinition[];
  /** Functions `code` steps may name. */
  functions?: Record<string, CodeFunction>;
  /** Runs `nlp` steps; without it, a pipeline with an nlp step is rejected at load. */
  nlp?: (operation: 'intake' | 'entities', text: string, signal: AbortSignal) => Promise<unknown>;
}

export interface Pipelines {
  engine: PipelineEngine;
  providers: ProviderRegistry;
  cases: CaseService;
  /** Deletes finished runs past their retention; the server starts it with the engine. */
  cleaner: RunCleaner;
  close(): Promise<void>;
}

/**
 * Loads and validates every pipeline (a bad definition stops the start, with a message naming the
 * pipeline, step and field), builds the providers with their limits and the engine that drives runs.
 */
export function createPipelines(options: {
  fleet: Fleet;
  store: PipelineStore;
  caseStore: CaseStore;
  /** This node, as the owner of the pipeline runs it drives. */
  owner: string;
  config: Readonly<FleetdConfig>;
  log: Logger;
  setup?: PipelineSetup;
  env?: NodeJS.ProcessEnv;
}): Pipelines {
  const { fleet, config, setup = {} } = options;
  const file = config.pipelinesFile ? loadPipelinesFile(config.pipelinesFile) : { providers: [], pipelines: [] };
  const providers = new ProviderRegistry([...(setup.providers ?? []), ...file.providers], options.env);
  const cases = new CaseService(options.caseStore, { threshold: config.caseSimilarityPercent / 100 });
  // Built in: `group-into-case` groups runs into cases by the similarity of their embeddings.
  const functions: Record<string, CodeFunction> = { 'group-into-case': cases.groupStep, ...setup.functions };
  const scope = { providers: providers.names(), functions: new Set(Object.keys(functions)) };
  // The file's pipelines and those defined over the API are held to the same checks.
  const compile = (def: PipelineDefinition): Pipeline => {
    const pipeline = compilePipeline(def, scope);
    if (!setup.nlp) {
      const nlpStep = pipeline.steps.find((s) => s.kind === 'nlp');
      if (nlpStep) throw new PipelineDefinitionError(pipeline.name, nlpStep.name, 'kind', 'nlp needs the NLP worker, which this server was started without');
    }
    return pipeline;
  };
  const pipelines = new Map<string, Pipeline>();
  for (const def of [...(setup.pipelines ?? []), ...file.pipelines]) {
    const pipeline = compile(def);
    if (pipelines.has(pipeline.name)) throw new Error(`pipeline ${pipeline.name}: name is used by another pipeline`);
    pipelines.set(pipeline.name, pipeline);
  }
  const outcomes = new TaskOutcomes(fleet);
  const runners: Record<WorkKind, StepRunner> = {
    llm: (ctx) => runLlmStep(ctx, providers.get((ctx.step as { provider: string }).provider)),
    embed: (ctx) => runEmbedStep(ctx, providers.get((ctx.step as { provider: string }).provider)),
    http: (ctx) => runHttpStep(ctx),
    agent: (ctx) => runAgentStep(ctx, fleet, outcomes),
    code: async (ctx: StepContext) => {
      const fn = (ctx.step as { fn: string | CodeFunction }).fn;
      return (typeof fn === 'function' ? fn : functions[fn])(ctx);
    },
    nlp: async (ctx: StepContext) => {
      const step = ctx.step as { operation: 'intake' | 'entities'; text: string };
      return setup.nlp!(step.operation, renderText(step.text, ctx), ctx.signal);
    },
  };
  const engine = new PipelineEngine({
    store: options.store,
    bus: fleet.bus,
    log: options.log,
    pipelines,
    compile,
    runners,
    concurrency: config.pipelineConcurrency,
    owner: options.owner,
    runLeaseMs: config.pipelineRunLeaseMs,
    limits: { maxPayloadBytes: config.maxPayloadBytes, maxPayloadDepth: config.maxPayloadDepth, maxBatch: config.maxTaskBatch },
  });
  const cleaner = new RunCleaner(options.store, config, () => fleet.now(), (err, service) => options.log.error({ err, service }, 'maintenance run failed'));
  return {
    engine,
    providers,
    cases,
    cleaner,
    async close() {
      cleaner.stop();
      await engine.stop();
      outcomes.close();
      await Promise.all([providers.close(), cases.close()]);
    },
  };
}
