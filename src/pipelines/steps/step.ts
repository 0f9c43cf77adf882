import type { CompiledStep } from '../definition.js';
import type { TemplateScope } from '../template.js';

/** What a step's code gets: the run, its input, earlier outputs, the attempt and a signal to stop on. */
export interface StepContext extends TemplateScope {
  step: CompiledStep;
  /** 1 for the first attempt. */
  attempt: number;
  /** Aborted on the step's timeout, on cancellation of the run and on shutdown. */
  signal: AbortSignal;
}

export type StepRunner = (ctx: StepContext) => Promise<unknown>;

/**
 * A step failure that says whether another attempt can help and, when the other side said so, how
 * long to wait. Any other thrown error counts as retryable with the step's own backoff.
 */
export class StepError extends Error {
  constructor(
    message: string,
    readonly retryable: boolean,
    readonly retryAfterMs?: number,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = 'StepError';
  }
}
