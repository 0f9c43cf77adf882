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
  FLEETD_ERR_REQUEST_TIMEOUT: 408,
  FLEETD_ERR_BODY_TOO_LARGE: 413,
  FLEETD_ERR_PAYLOAD_TOO_LARGE: 413,
  /** A path parameter longer than the router takes (100 characters). */
  FLEETD_ERR_URI_TOO_LONG: 414,
  FLEETD_ERR_UNSUPPORTED_MEDIA_TYPE: 415,
  FLEETD_ERR_RATE_LIMITED: 429,
  FLEETD_ERR_TOO_MANY_CONNECTIONS: 429,
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

/** A dependency is down: a 503 with Retry-After, and no log line of its own (the outage is logged once). */
export const dependencyUnavailable = (dependency: string, message: string, retryAfterSeconds = 1): FleetError =>
  new FleetError('FLEETD_ERR_UNAVAILABLE', message, { dependency, retryAfterSeconds });

export const isDependencyUnavailable = (err: unknown): err is FleetError => err instanceof FleetError && err.code === 'FLEETD_ERR_UNAVAILABLE';
