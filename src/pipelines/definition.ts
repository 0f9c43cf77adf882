import type { Approvers } from '../domain/runs.js';
import type { TemplateScope } from './template.js';

/** Retry and timeout policy of a step; a pipeline's `defaults` fill in what a step leaves out. */
export interface StepPolicy {
  /** Longest run of one attempt, in ms. Defaults to 120000. */
  timeoutMs?: number;
  /** Attempts before the step, and so the run, fails. Defaults to 3. */
  attempts?: number;
  /** Backoff before the second attempt, in ms, doubled for each later one, with jitter. Defaults to 1000. */
  backoffMs?: number;
  /** Longest backoff, in ms (a provider's Retry-After may ask for more, and gets it). Defaults to 60000. */
  backoffMaxMs?: number;
}

interface StepBase extends StepPolicy {
  name: string;
  /**
   * Steps whose outputs this one needs; it starts when they have all completed. Omitted: the step
   * before it in the list (so a plain list is a chain). `[]`: it starts at once.
   */
  needs?: string[];
}

/**
 * Text fields are templates: `{{input.text}}` is the run's input field, `{{steps.extract}}` the
 * output of step `extract` (which must be among the step's needs, directly or not). A field that is
 * one placeholder and nothing else keeps the value's type (an array stays an array).
 */
export type StepDefinition =
  | (StepBase & { kind: 'llm'; provider: string; model?: string; system?: string; prompt: string; json?: boolean; temperature?: number; maxTokens?: number })
  | (StepBase & { kind: 'embed'; provider: string; model?: string; input: string })
  | (StepBase & { kind: 'http'; url: string; method?: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE'; headers?: Record<string, string>; body?: unknown })
  | (StepBase & { kind: 'agent'; capability: string; type?: string; payload?: unknown; priority?: number; leaseMs?: number; taskAttempts?: number })
  | (StepBase & { kind: 'code'; fn: string | CodeFunction })
  | (StepBase & { kind: 'nlp'; operation: 'intake' | 'entities'; text: string })
  /**
   * Waits for a person's decision (or an agent's, when `approvers` names it), holding no slot of
   * the background lane, for at most `timeoutMs` (default a day), then decides as `onTimeout` says.
   */
  | (StepBase & { kind: 'approval'; prompt: string; onTimeout?: 'approve' | 'reject'; approvers?: Approvers });

export type StepKind = StepDefinition['kind'];
export const STEP_KINDS: readonly StepKind[] = ['llm', 'embed', 'http', 'agent', 'code', 'nlp', 'approval'];
/** The kinds whose steps run code in the background lane: every kind but approval, which only waits. */
export type WorkKind = Exclude<StepKind, 'approval'>;
/** How long an approval step waits for a decision unless it says otherwise. */
export const APPROVAL_TIMEOUT_MS = 86_400_000;

/** A registered TypeScript step: gets the run's input and the outputs of earlier steps; returns JSON. */
export type CodeFunction = (ctx: StepContext) => unknown | Promise<unknown>;

export interface PipelineDefinition {
  name: string;
  description?: string;
  defaults?: StepPolicy;
  steps: StepDefinition[];
}

/** A validated pipeline: every step with its needs resolved and its policy filled in. */
export interface Pipeline {
  name: string;
  description: string;
  steps: CompiledStep[];
  /** Steps no other step needs: their outputs make the run's output. */
  sinks: string[];
}

export type CompiledStep = StepDefinition & { needs: string[]; policy: Required<StepPolicy> };

/** What a step's code gets: the run, its input, earlier outputs, the attempt and a signal to stop on. */
export interface StepContext extends TemplateScope {
  step: CompiledStep;
  /** 1 for the first attempt. */
  attempt: number;
  /** Aborted on the step's timeout, on cancellation of the run and on shutdown. */
  signal: AbortSignal;
}

export type StepRunner = (ctx: StepContext) => Promise<unknown>;

export const defaultStepPolicy: Required<StepPolicy> = { timeoutMs: 120_000, attempts: 3, backoffMs: 1_000, backoffMaxMs: 60_000 };
