import { ERROR_STATUS, type ErrorJson } from './wire.js';

/**
 * Throw from a handler to fail the task for good: it is dead-lettered at once, whatever attempts it
 * has left (bad input, a permanent refusal). Any other error fails the task for a retry.
 */
export class NonRetryableError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'NonRetryableError';
  }
}

/**
 * Throw from a handler (or call `ctx.release(delayMs)`) to give the task back for later without
 * spending an attempt: its provider answered 429, a resource it needs is busy. The task returns to
 * the queue after `delayMs`.
 */
export class RetryLaterError extends Error {
  constructor(
    readonly delayMs: number,
    message = `retry in ${delayMs} ms`,
  ) {
    super(message);
    this.name = 'RetryLaterError';
  }
}

/** An error answer from the server: its HTTP status, the fleetd error code and details. */
export class FleetApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = 'FleetApiError';
  }

  /**
   * An error that came over a socket, where no HTTP status travels with it: the status is the one
   * the server's catalogue gives its code (500 for a code this SDK does not know yet).
   */
  static fromWire(error: ErrorJson): FleetApiError {
    const status: number = (ERROR_STATUS as Record<string, number>)[error.code] ?? 500;
    return new FleetApiError(status, error.code, error.message, error.details);
  }
}
