import { ERROR_STATUS, type ErrorJson, type TaskJson } from './wire.js';

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
export class TaskRevokedError extends Error {
  constructor(
    readonly taskId: number,
    readonly code: 'FLEETD_ERR_CANCELLED' | 'FLEETD_ERR_TIMEOUT',
    readonly reason: string,
  ) {
    super(reason);
    this.name = 'TaskRevokedError';
  }
}

/**
 * What `run` and `waitFor` throw when the task did not complete: `task` is the task as it was last
 * read. Subclasses say why: TaskFailedError (dead: its attempts spent, a NonRetryableError, a
 * timeout or an expiry — `task.error.code` says which), TaskCancelledError, TaskWaitTimeoutError.
 */
export class TaskOutcomeError extends Error {
  constructor(
    readonly task: TaskJson,
    message: string,
  ) {
    super(message);
    this.name = 'TaskOutcomeError';
  }
}

/** The task is dead; `task.error` says why. */
export class TaskFailedError extends TaskOutcomeError {
  constructor(task: TaskJson) {
    const error = task.error as { message?: unknown } | null;
    super(task, `task ${task.id} failed: ${typeof error?.message === 'string' ? error.message : JSON.stringify(task.error)}`);
    this.name = 'TaskFailedError';
  }
}

/** The task was cancelled; `task.error.message` is the reason given. */
export class TaskCancelledError extends TaskOutcomeError {
  constructor(task: TaskJson) {
    super(task, `task ${task.id} was cancelled`);
    this.name = 'TaskCancelledError';
  }
}

/** The wait's `timeoutMs` passed before the task ended; `task` is as it was then (it goes on). */
export class TaskWaitTimeoutError extends TaskOutcomeError {
  constructor(task: TaskJson, timeoutMs: number) {
    super(task, `task ${task.id} did not end within ${timeoutMs} ms (it is ${task.status})`);
    this.name = 'TaskWaitTimeoutError';
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
