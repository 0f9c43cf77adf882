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
}
