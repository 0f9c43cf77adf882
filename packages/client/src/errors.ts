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
 * The reason a handler's `signal` aborts with when the server ended the task's attempt: it was
 * cancelled (`code` FLEETD_ERR_CANCELLED, `message` the reason given) or ran past its
 * executionTimeoutMs (FLEETD_ERR_TIMEOUT). Whatever the handler returns after it is dropped: the
 * server would refuse it.
 */
export class TaskCancelledError extends Error {
  constructor(
    readonly taskId: number,
    readonly code: 'FLEETD_ERR_CANCELLED' | 'FLEETD_ERR_TIMEOUT',
    readonly reason: string,
  ) {
    super(reason);
    this.name = 'TaskCancelledError';
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
