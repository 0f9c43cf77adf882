"""fleetd: the Python SDK of fleetd.

Submitters: ``Fleet`` (blocking) or ``AsyncFleet`` (asyncio): ``submit``, ``submit_batch``, ``get``,
``list``, ``cancel``, ``run``, ``wait_for``, ``subscribe``, ``stats``.
Workers: ``fleet.agent(name, capabilities, concurrency)``, handlers by ``@agent.task("type")``.
"""
from .agent import AsyncAgent, TaskContext
from .client import AsyncFleet, StreamEvent, Subscription, TaskPage
from .errors import (
    ConflictError,
    FleetApiError,
    FleetError,
    FleetUnavailableError,
    ForbiddenError,
    NonRetryableError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    RetryLaterError,
    ServerError,
    TaskCancelledError,
    TaskFailedError,
    UnauthorizedError,
    ValidationError,
)
from .sync import Agent, Fleet, SyncSubscription
from .wire import AGENT_PROTOCOL_VERSION, DEFAULT_NAMESPACE, ERROR_STATUS, NAMESPACE_HEADER, NAMESPACE_PATTERN, AgentInput, ErrorJson, Task, TaskInput, TaskStatus, TaskSummary
from .wire import Agent as AgentJson

__all__ = [
    "AGENT_PROTOCOL_VERSION",
    "DEFAULT_NAMESPACE",
    "ERROR_STATUS",
    "NAMESPACE_HEADER",
    "NAMESPACE_PATTERN",
    "Agent",
    "AgentInput",
    "AgentJson",
    "AsyncAgent",
    "AsyncFleet",
    "ConflictError",
    "ErrorJson",
    "Fleet",
    "FleetApiError",
    "FleetError",
    "FleetUnavailableError",
    "ForbiddenError",
    "NonRetryableError",
    "NotFoundError",
    "PayloadTooLargeError",
    "RateLimitedError",
    "RetryLaterError",
    "ServerError",
    "StreamEvent",
    "Subscription",
    "SyncSubscription",
    "Task",
    "TaskCancelledError",
    "TaskContext",
    "TaskFailedError",
    "TaskInput",
    "TaskPage",
    "TaskStatus",
    "TaskSummary",
    "UnauthorizedError",
    "ValidationError",
]
