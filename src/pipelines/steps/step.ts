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
