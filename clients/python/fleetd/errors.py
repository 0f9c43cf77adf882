"""Errors the SDK raises, and the ones a handler raises to steer its task."""
from __future__ import annotations

from typing import Any

from .wire import ERROR_STATUS, Task


class FleetError(Exception):
    """Base of every error this SDK raises."""


class FleetApiError(FleetError):
    """An error answer from the server: its HTTP status, fleetd error code, message and details.

    Raised as the subclass for its status (``ValidationError`` for a 400, ``NotFoundError`` for a
    404, ...), so that ``except fleetd.NotFoundError`` reads as what it catches; ``code`` is exact.
    """

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details: dict[str, Any] = details or {}

    @staticmethod
    def of(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> FleetApiError:
        cls = _BY_STATUS.get(status, ServerError if status >= 500 else FleetApiError)
        return cls(status, code, message, details)

    @staticmethod
    def from_wire(error: dict[str, Any]) -> FleetApiError:
        """An error that came over a socket, where no status travels: the catalogue's for its code."""
        code = str(error.get("code", "FLEETD_ERR_INTERNAL"))
        return FleetApiError.of(ERROR_STATUS.get(code, 500), code, str(error.get("message", "")), error.get("details") or {})


class ValidationError(FleetApiError):
    """400: the request was refused as it stands (a bad field, malformed JSON); nothing changed."""


class UnauthorizedError(FleetApiError):
    """401: no credential, or one the server does not know."""


class ForbiddenError(FleetApiError):
    """403: the credential may not do this."""


class NotFoundError(FleetApiError):
    """404: no such task, agent or route."""


class ConflictError(FleetApiError):
    """409: the state forbids it (a lease lost, a task already finished, an idempotency key reused)."""


class PayloadTooLargeError(FleetApiError):
    """413: a body or payload over the server's limit."""


class RateLimitedError(FleetApiError):
    """429: over a rate or connection limit; try again later."""


class ServerError(FleetApiError):
    """5xx: the server could not do it now (restarting, store unavailable, disk full)."""


_BY_STATUS: dict[int, type[FleetApiError]] = {
    400: ValidationError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    429: RateLimitedError,
}


class FleetUnavailableError(FleetError):
    """No node could be reached (after the retries that were safe).

    ``answer_may_be_lost``: the connection dropped after the request may have reached a node, which
    may have acted on it.
    """

    def __init__(self, message: str, *, answer_may_be_lost: bool = False) -> None:
        super().__init__(message)
        self.answer_may_be_lost = answer_may_be_lost


class TaskFailedError(FleetError):
    """``run``: the task ended dead (its attempts used up, or a non-retryable failure)."""

    def __init__(self, task: Task) -> None:
        super().__init__(f"task {task['id']} is dead after {task['attempts']} attempt(s): {task.get('error')!r}")
        self.task = task


class TaskCancelledError(FleetError):
    """``run``: the task was cancelled before it completed."""

    def __init__(self, task: Task) -> None:
        super().__init__(f"task {task['id']} was cancelled")
        self.task = task


class NonRetryableError(Exception):
    """Raise from a handler to fail the task for good: it is dead-lettered at once, whatever
    attempts it has left (bad input, a permanent refusal). Any other exception fails it for a retry."""


class RetryLaterError(Exception):
    """Raise from a handler (or call ``ctx.release(delay_ms)``) to give the task back for later
    without spending an attempt: a provider answered 429, a resource is busy. It returns to the queue
    after ``delay_ms`` milliseconds; ``reason`` is recorded in the task's error."""

    def __init__(self, delay_ms: float, reason: str | None = None) -> None:
        if delay_ms < 0:
            raise ValueError(f"delay_ms must be at least 0, not {delay_ms}")
        super().__init__(reason or f"retry in {delay_ms} ms")
        self.delay_ms = delay_ms
        self.reason = reason
