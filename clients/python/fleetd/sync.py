"""The blocking API, for scripts: ``Fleet`` and its ``Agent``. Both drive the asyncio implementation,
so the two APIs behave the same: ``Fleet`` on an event loop in a daemon thread of its own, ``Agent.run``
on one in the calling thread."""
from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, Literal, TypeVar

from .agent import AsyncAgent, Handler
from .client import AsyncFleet, StreamEvent, Subscription, TaskPage
from .wire import Agent as AgentJson
from .wire import Task, TaskInput, TaskStatus

T = TypeVar("T")


class Fleet:
    """The fleetd SDK for blocking code: ``Fleet("http://localhost:7070", api_key=KEY)``.

    The same calls as ``AsyncFleet``, each returning its answer; ``agent()`` makes a worker whose
    ``run()`` blocks until SIGTERM or SIGINT. ``close()`` (or ``with Fleet(...) as fleet:``) ends it.
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        urls: Sequence[str] | None = None,
        retries: int | None = None,
        timeout: float = 30.0,
        ca_bundle: str | None = None,
        namespace: str | None = None,
    ) -> None:
        self._options: dict[str, Any] = dict(url=url, api_key=api_key, urls=urls, retries=retries, timeout=timeout, ca_bundle=ca_bundle, namespace=namespace)
        self._async = AsyncFleet(**self._options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fleetd-client", daemon=True)
        self._thread.start()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    @property
    def urls(self) -> list[str]:
        return self._async.urls

    @property
    def namespace(self) -> str | None:
        """The namespace this client acts in, when it was made for one (see ``AsyncFleet``)."""
        return self._async.namespace

    def close(self) -> None:
        if self._loop.is_running():
            self._call(self._async.aclose())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def submit(
        self,
        type: str,
        payload: Any = None,
        *,
        priority: int | None = None,
        requires: list[str] | None = None,
        idempotency_key: str | None = None,
        max_attempts: int | None = None,
        lease_ms: int | None = None,
        backoff_ms: int | None = None,
        run_at: datetime | str | None = None,
        delay_ms: int | None = None,
        execution_timeout_ms: int | None = None,
        schedule_timeout_ms: int | None = None,
        agent_id: str | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        parent_id: int | None = None,
        depends_on: list[int] | None = None,
        on_dependency_failure: Literal["cancel", "run"] | None = None,
        concurrency_key: str | None = None,
        locks: list[str] | None = None,
    ) -> Task:
        """Submits a task and returns it; with an idempotency key used before, the first task with it."""
        return self._call(self._async.submit(type, payload, priority=priority, requires=requires, idempotency_key=idempotency_key, max_attempts=max_attempts, lease_ms=lease_ms, backoff_ms=backoff_ms, run_at=run_at, delay_ms=delay_ms, execution_timeout_ms=execution_timeout_ms, schedule_timeout_ms=schedule_timeout_ms, agent_id=agent_id, tags=tags, metadata=metadata, parent_id=parent_id, depends_on=depends_on, on_dependency_failure=on_dependency_failure, concurrency_key=concurrency_key, locks=locks))

    def submit_batch(self, tasks: Iterable[TaskInput], *, minimal: bool = False) -> list[Task]:
        return self._call(self._async.submit_batch(list(tasks), minimal=minimal))

    def get(self, id: int) -> Task:
        return self._call(self._async.get(id))

    def list(self, *, status: TaskStatus | None = None, type: str | None = None, agent_id: str | None = None, limit: int | None = None, cursor: str | None = None) -> TaskPage:
        return self._call(self._async.list(status=status, type=type, agent_id=agent_id, limit=limit, cursor=cursor))

    def cancel(self, id: int, reason: str | None = None) -> Task:
        return self._call(self._async.cancel(id, reason))

    def stats(self) -> dict[str, Any]:
        return self._call(self._async.stats())

    def wait_for(self, id: int, timeout: float | None = None) -> Task:
        """The task once it is completed, dead or cancelled (see ``AsyncFleet.wait_for``)."""
        return self._call(self._async.wait_for(id, timeout))

    def run(self, type: str, payload: Any = None, *, timeout: float | None = None, **options: Any) -> Any:
        """Submits a task and waits for it: its result, or TaskFailedError (dead), TaskCancelledError."""
        return self._call(self._async.run(type, payload, timeout=timeout, **options))

    def register_agent(self, name: str, capabilities: Sequence[str] = (), *, labels: dict[str, str] | None = None, max_concurrency: int | None = None) -> tuple[AgentJson, str]:
        return self._call(self._async.register_agent(name, capabilities, labels=labels, max_concurrency=max_concurrency))

    def subscribe(self, topics: Sequence[str]) -> SyncSubscription:
        """Events of ``topics`` as an iterator (see ``AsyncFleet.subscribe``)."""
        return SyncSubscription(self, self._call(self._async.subscribe(topics)))

    def agent(self, name: str, capabilities: Sequence[str], concurrency: int = 1, **options: Any) -> Agent:
        """A worker: decorate handlers with ``@agent.task("type")`` (or one with ``@agent.handler``),
        then ``agent.run()``. Options: see ``AsyncAgent``."""
        return Agent(self._options, name, capabilities, concurrency, options)


class SyncSubscription:
    """``for event in subscription``; ``close()`` ends the iteration."""

    def __init__(self, fleet: Fleet, subscription: Subscription) -> None:
        self._fleet = fleet
        self._subscription = subscription

    def __iter__(self) -> Iterator[StreamEvent]:
        return self

    def __next__(self) -> StreamEvent:
        try:
            return self._fleet._call(self._subscription.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None

    def close(self) -> None:
        self._fleet._loop.call_soon_threadsafe(self._subscription.close)


class Agent:
    """A blocking worker: register handlers, then ``run()``, which returns after SIGTERM or SIGINT
    (or ``stop()`` from another thread) once the tasks in hand are finished."""

    def __init__(self, client_options: dict[str, Any], name: str, capabilities: Sequence[str], concurrency: int, options: dict[str, Any]) -> None:
        self._client_options = client_options
        self._args = (name, capabilities, concurrency)
        self._options = options
        self._handlers: dict[str, Handler] = {}
        self._default: Handler | None = None
        self._listeners: list[tuple[str, Callable[..., None]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._agent: AsyncAgent | None = None

    def task(self, type: str) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            self._handlers[type] = fn
            return fn

        return register

    def handler(self, fn: Handler) -> Handler:
        self._default = fn
        return fn

    def on(self, event: str, listener: Callable[..., None]) -> None:
        """``connected``, ``disconnected``, ``task``, ``error``: see ``AsyncAgent.on``."""
        self._listeners.append((event, listener))

    @property
    def id(self) -> str | None:
        return self._agent.id if self._agent else None

    @property
    def in_flight(self) -> int:
        return self._agent.in_flight if self._agent else 0

    def run(self, stop_timeout: float = 30.0) -> None:
        """Works until SIGTERM or SIGINT (when called on the main thread) or ``stop()``."""
        asyncio.run(self._main(stop_timeout))

    def stop(self) -> None:
        """From another thread: ``run()`` stops gracefully and returns."""
        if self._loop is not None and self._agent is not None:
            asyncio.run_coroutine_threadsafe(self._agent.stop(), self._loop)

    async def _main(self, stop_timeout: float) -> None:
        self._loop = asyncio.get_running_loop()
        async with AsyncFleet(**self._client_options) as fleet:
            agent = self._agent = fleet.agent(*self._args, **self._options)
            agent._handlers.update(self._handlers)
            agent._default = self._default
            for event, listener in self._listeners:
                agent.on(event, listener)
            on_main = threading.current_thread() is threading.main_thread()
            await agent.run(stop_signals=(signal.SIGTERM, signal.SIGINT) if on_main else (), stop_timeout=stop_timeout)
