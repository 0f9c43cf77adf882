/**
 * The catalogue of fleetd's coded errors. Routes, the SDK and tests share these codes;
 * tests assert the code, never the wording. A code is never reused for another meaning.
 */
export const ErrorCodes = {
  FLEETD_ERR_VALIDATION: 400,
  FLEETD_ERR_MALFORMED_JSON: 400,
  /** Bytes the HTTP parser refuses: not a request any route could see. */
  FLEETD_ERR_BAD_REQUEST: 400,
  FLEETD_ERR_UNAUTHORIZED: 401,
  FLEETD_ERR_FORBIDDEN: 403,
  FLEETD_ERR_NOT_FOUND: 404,
  /** A known path asked with a method it does not take; the answer's Allow header lists those it does. */
  FLEETD_ERR_METHOD_NOT_ALLOWED: 405,
  FLEETD_ERR_LEASE_LOST: 409,
  /** Recorded as a task's error when its lease ran out before its agent finished. */
  FLEETD_ERR_LEASE_EXPIRED: 409,
  FLEETD_ERR_TASK_STATE: 409,
  FLEETD_ERR_IDEMPOTENCY_CONFLICT: 409,
  FLEETD_ERR_LOCK_CONFLICT: 409,
  FLEETD_ERR_AGENT_OFFLINE: 409,
  FLEETD_ERR_RUN_STATE: 409,
  FLEETD_ERR_KEY_STATE: 409,
  /** Recorded as a waiting task's error when a task it depends on ended dead or cancelled. */
  FLEETD_ERR_DEPENDENCY_FAILED: 409,
  /** A schedule with that name exists already. */
  FLEETD_ERR_SCHEDULE_EXISTS: 409,
  FLEETD_ERR_REQUEST_TIMEOUT: 408,
  FLEETD_ERR_BODY_TOO_LARGE: 413,
  FLEETD_ERR_PAYLOAD_TOO_LARGE: 413,
  /** A log line or a chunk of output over its limit (the details name it). */
  FLEETD_ERR_ENTRY_TOO_LARGE: 413,
  /** A path parameter longer than the router takes (100 characters). */
  FLEETD_ERR_URI_TOO_LONG: 414,
  FLEETD_ERR_UNSUPPORTED_MEDIA_TYPE: 415,
  FLEETD_ERR_RATE_LIMITED: 429,
  FLEETD_ERR_TOO_MANY_CONNECTIONS: 429,
  /** A namespace's quota (queued tasks, tasks per second, agents) would be exceeded: retry after Retry-After. */
  FLEETD_ERR_QUOTA_EXCEEDED: 429,
  FLEETD_ERR_HEADERS_TOO_LARGE: 431,
  FLEETD_ERR_INTERNAL: 500,
  /** The database is up but no pooled connection freed up in time. */
  FLEETD_ERR_STORE_UNAVAILABLE: 503,
  /**
   * A service fleetd depends on (PostgreSQL) is down, or the connection to it dropped under the
   * request: nothing was written unless the request's own answer says so; try again after Retry-After.
   */
  FLEETD_ERR_UNAVAILABLE: 503,
  FLEETD_ERR_SHUTTING_DOWN: 503,
  FLEETD_ERR_DASHBOARD_NOT_BUILT: 503,
  FLEETD_ERR_STORAGE_FULL: 507,
  /** A pipeline definition given over the API that does not validate; details name the pipeline, step and field. */
  FLEETD_ERR_PIPELINE_DEFINITION: 400,
  /** A change over the API to a pipeline that the pipelines file (or code) defines: it is changed there. */
  FLEETD_ERR_PIPELINE_FROM_FILE: 409,
  /** A stored version of a pipeline that this node cannot run (it lacks a provider or function the version names). */
  FLEETD_ERR_PIPELINE_UNRUNNABLE: 409,
  /** A decision on an approval step that is not waiting for one (decided, timed out, not reached, or not an approval). */
  FLEETD_ERR_STEP_NOT_WAITING: 409,
  /** The task was cancelled: an agent still working on it is told to stop, and its completion is refused. */
  FLEETD_ERR_CANCELLED: 409,
  /** Recorded as an attempt's error when it ran past the task's executionTimeoutMs; the agent is told to stop. */
  FLEETD_ERR_TIMEOUT: 409,
  /** Recorded as a task's error when nobody claimed it within its scheduleTimeoutMs: it went dead unrun. */
  FLEETD_ERR_EXPIRED: 409,
  /** Too many failed authentications from one address in a minute: every credential it sends is refused until Retry-After. */
  FLEETD_ERR_AUTH_RATE_LIMITED: 429,
  /** An API key past its expiresAt, or a rotated key's old secret past its grace. */
  FLEETD_ERR_KEY_EXPIRED: 401,
  /** Recorded as a task's error when its agent gave it back for later (release): no attempt was spent. */
  FLEETD_ERR_RELEASED: 409,
} as const;

export type ErrorCode = keyof typeof ErrorCodes;

export class FleetError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly details: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, details: Record<string, unknown> = {}) {
    super(message);
    this.name = 'FleetError';
    this.code = code;
    this.status = ErrorCodes[code];
    this.details = details;
  }

  toJSON(): { error: { code: ErrorCode; message: string; details: Record<string, unknown> } } {
    return { error: { code: this.code, message: this.message, details: this.details } };
  }
}

export const notFound = (what: string, id: string | number): FleetError =>
  new FleetError('FLEETD_ERR_NOT_FOUND', `${what} ${id} does not exist`, { [what]: id });

export const invalid = (field: string, message: string, extra: Record<string, unknown> = {}): FleetError =>
  new FleetError('FLEETD_ERR_VALIDATION', `${field}: ${message}`, { field, ...extra });

/**
 * A dependency is down: a 503 with Retry-After, and no log line of its own (the outage is logged
 * once). `outcomeUnknown`: the connection was lost while a statement was on its way, which may have
 * been written all the same (a claim may have leased tasks: GET /v1/agents/:id/leases lists them).
 */
export const dependencyUnavailable = (dependency: string, message: string, retryAfterSeconds = 1, outcomeUnknown = false): FleetError =>
  new FleetError('FLEETD_ERR_UNAVAILABLE', message, { dependency, retryAfterSeconds, ...(outcomeUnknown ? { outcomeUnknown } : {}) });

/** Whether the request may have been written despite its error: see dependencyUnavailable. */
export const outcomeUnknown = (err: unknown): boolean => err instanceof FleetError && err.details.outcomeUnknown === true;

/** The error a waiting task is cancelled with when a dependency of its fails: the same in both drivers. */
export const dependencyFailedError = { code: 'FLEETD_ERR_DEPENDENCY_FAILED' satisfies ErrorCode, message: 'a task this one depends on ended dead or cancelled' };

export const isDependencyUnavailable = (err: unknown): err is FleetError => err instanceof FleetError && err.code === 'FLEETD_ERR_UNAVAILABLE';
