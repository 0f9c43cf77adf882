"""``AsyncFleet``: the asyncio client for code that submits and watches work."""
from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import ssl
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import httpx

from ._backoff import full_jitter, trusting, ws_connect
from .errors import FleetApiError, FleetUnavailableError, TaskCancelledError, TaskFailedError
from .wire import NAMESPACE_HEADER, NAMESPACE_PATTERN, Agent, Task, TaskInput, TaskStatus

if TYPE_CHECKING:
    from .agent import AsyncAgent, Handler

log = logging.getLogger("fleetd")

#: Connection errors raised before the request left: any call may go to another node and be resent.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout)
#: Connection errors that may come after the node received (and acted on) the request.
_CONNECTION_LOST = (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadTimeout)
#: Answers of a node (or a proxy before it) that is down, overloaded or restarting.
_NODE_UNAVAILABLE = {502, 503, 504}
FINAL_STATUSES = frozenset({"completed", "dead", "cancelled"})
_FINAL_EVENTS = frozenset({"task.completed", "task.dead", "task.cancelled"})
#: Topics one observer socket may hold (the server's limit).
MAX_TOPICS = 1000
#: How long ``wait_for`` trusts the event stream before it looks at the task again anyway.
_RECHECK_S = 5.0


@dataclass(frozen=True)
class StreamEvent:
    """An event of the observer stream: ``name`` a fleetd event (``task.completed``...) or ``stats``;
    ``data`` its payload (a task event's task is a ``TaskSummary``: the task without payload and result)."""

    topic: str
    name: str
    data: Any
    #: When the server published it, ISO 8601.
    at: str


@dataclass(frozen=True)
class TaskPage:
    items: list[Task]
    #: Give it as ``cursor`` for the next page; None on the last.
    next_cursor: str | None


def _task_input(type: str, payload: Any, options: dict[str, Any]) -> TaskInput:
    """Keyword arguments (snake_case) to the wire's TaskInput (camelCase); unknown ones are refused."""
    body: dict[str, Any] = {"type": type}
    if payload is not None:
        body["payload"] = payload
    for key, value in options.items():
        if value is None:
            continue
        if key not in SUBMIT_OPTIONS:
            raise TypeError(f"submit() got an unexpected keyword argument {key!r}")
        if isinstance(value, datetime):
            value = value.isoformat()
        body[SUBMIT_OPTIONS[key]] = value
    return body  # type: ignore[return-value]


#: ``submit``'s keyword arguments and the TaskInput fields they fill (a test checks them against /openapi.json).
SUBMIT_OPTIONS = {
    "priority": "priority",
    "requires": "requires",
    "idempotency_key": "idempotencyKey",
    "max_attempts": "maxAttempts",
    "lease_ms": "leaseMs",
    "backoff_ms": "backoffMs",
    "run_at": "runAt",
    "delay_ms": "delayMs",
    "execution_timeout_ms": "executionTimeoutMs",
    "schedule_timeout_ms": "scheduleTimeoutMs",
    "agent_id": "agentId",
    "tags": "tags",
    "metadata": "metadata",
    "parent_id": "parentId",
    "depends_on": "dependsOn",
    "on_dependency_failure": "onDependencyFailure",
    "concurrency_key": "concurrencyKey",
    "locks": "locks",
}


def _with_key(task: TaskInput) -> TaskInput:
    """A task without an idempotency key gets one, so that a submit whose answer was lost can be
    sent again (to another node too) without creating the task twice."""
    if "idempotencyKey" in task:
        return task
    return {**task, "idempotencyKey": f"sdk-{uuid.uuid4()}"}  # type: ignore[typeddict-item]


class AsyncFleet:
    """The fleetd SDK for asyncio code that submits and watches work; ``agent()`` makes a worker.

    ``AsyncFleet("http://localhost:7070", api_key=KEY)``, or ``urls=[...]`` for the nodes of one
    cluster: a node that cannot be reached, drops the connection or answers 502/503/504 makes the
    client move to the next one. Requests the node never received, reads and submits (which carry
    an idempotency key) are sent again there, after a jittered backoff, up to ``retries`` times
    (default 3 per node). Error answers raise ``FleetApiError`` subclasses (``NotFoundError``...).
    ``ca_bundle`` names a PEM file of certificate authorities to trust besides the system's, for a
    fleetd serving HTTPS with a private or self-signed certificate.

    ``namespace`` is the namespace this client acts in, sent as the Fleetd-Namespace header on every
    request and WebSocket: tasks are submitted to it, reads see only it (a task of another namespace
    is a ``NotFoundError``), and agents made from this client register in it. Without it, a key
    scoped to one namespace acts in that one, and a key of every namespace in ``default`` (and
    reads all of them). A name the server would refuse is a ``ValueError`` here.
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
        nodes = list(urls) if urls else ([url] if url else [])
        if not nodes:
            raise TypeError("AsyncFleet needs url or urls")
        # Said here rather than as a 400 on the first request, which may come long after (an agent's registration).
        if namespace is not None and not (isinstance(namespace, str) and re.fullmatch(NAMESPACE_PATTERN, namespace)):
            raise ValueError(
                f"namespace {namespace!r} is not a namespace's name (lower-case letters, digits, - and _, starting with a letter or digit, at most 63 characters: {NAMESPACE_PATTERN})"
            )
        self.namespace = namespace
        self.urls = [u.rstrip("/") for u in nodes]
        self.api_key = api_key
        self.retries = retries if retries is not None else 3 * len(self.urls)
        self._current = 0
        #: With ``ca_bundle``: the TLS context every request and WebSocket (https://, wss://) uses.
        self.ssl_context = trusting(ca_bundle)
        verify: ssl.SSLContext | bool = self.ssl_context if self.ssl_context is not None else True
        self._http = httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=200, max_keepalive_connections=200), verify=verify)
        self._observer: _Observer | None = None

    @property
    def url(self) -> str:
        """The node requests go to now."""
        return self.urls[self._current]

    def failover(self, failed: str) -> None:
        """Moves on from ``failed`` to the next node, unless another caller has already moved on from it."""
        if self.urls[self._current] == failed:
            self._current = (self._current + 1) % len(self.urls)

    async def aclose(self) -> None:
        if self._observer:
            await self._observer.close()
        await self._http.aclose()

    def _headers(self, credential: str | None) -> dict[str, str]:
        """What every request and WebSocket of this client carries: ``credential``, and the namespace when one was given."""
        headers = {"authorization": f"Bearer {credential}"} if credential else {}
        if self.namespace is not None:
            headers[NAMESPACE_HEADER] = self.namespace
        return headers

    async def __aenter__(self) -> AsyncFleet:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        credential: str | None = None,
        retry: bool | None = None,
        timeout: float | None = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """One HTTP call with the client's API key, unless ``credential`` names another (an agent's token)."""
        may_repeat = retry if retry is not None else method == "GET"
        attempt = 0
        while True:
            node = self.url
            try:
                return await self._request_once(node, method, path, body, credential or self.api_key, timeout, params)
            except FleetApiError as err:
                if err.status not in _NODE_UNAVAILABLE:
                    raise
                self.failover(node)
                if not may_repeat or attempt >= self.retries:
                    raise
            except (*_NOT_SENT, *_CONNECTION_LOST) as err:
                self.failover(node)
                if not (may_repeat or isinstance(err, _NOT_SENT)) or attempt >= self.retries:
                    raise FleetUnavailableError(f"cannot reach {node} ({type(err).__name__}: {err})", answer_may_be_lost=isinstance(err, _CONNECTION_LOST)) from err
            attempt += 1
            await asyncio.sleep(full_jitter(attempt, 0.05, 2.0))

    async def _request_once(self, node: str, method: str, path: str, body: Any, credential: str | None, timeout: float | None, params: dict[str, Any] | None) -> Any:
        headers = self._headers(credential)
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        res = await self._http.request(method, node + path, json=body, headers=headers, params=params, **extra)
        try:
            parsed = res.json() if res.content else None
        except ValueError:  # a proxy's HTML error page
            parsed = None
        if res.status_code >= 400:
            error = parsed.get("error", {}) if isinstance(parsed, dict) else {}
            raise FleetApiError.of(res.status_code, error.get("code", "FLEETD_ERR_HTTP"), error.get("message", f"HTTP {res.status_code}"), error.get("details"))
        return parsed

    # ---- tasks ----

    async def submit(
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
        """Submits a task and returns it; with an idempotency key used before, the first task with it.
        With ``depends_on`` it waits until those tasks have finished (see docs/workflows.md)."""
        task = _task_input(type, payload, dict(priority=priority, requires=requires, idempotency_key=idempotency_key, max_attempts=max_attempts, lease_ms=lease_ms, backoff_ms=backoff_ms, run_at=run_at, delay_ms=delay_ms, execution_timeout_ms=execution_timeout_ms, schedule_timeout_ms=schedule_timeout_ms, agent_id=agent_id, tags=tags, metadata=metadata, parent_id=parent_id, depends_on=depends_on, on_dependency_failure=on_dependency_failure, concurrency_key=concurrency_key, locks=locks))
        return (await self.request("POST", "/v1/tasks", _with_key(task), retry=True))["task"]

    async def submit_batch(self, tasks: Iterable[TaskInput], *, minimal: bool = False) -> list[Task]:
        """All or nothing: one bad task refuses the whole batch. Each task gets a key as in ``submit``.
        With ``minimal``, each task comes back without its payload, result and error
        (``?return=minimal``), so that long prompts are not sent back."""
        path = "/v1/tasks/batch?return=minimal" if minimal else "/v1/tasks/batch"
        answer = await self.request("POST", path, {"tasks": [_with_key(t) for t in tasks]}, retry=True)
        return [item["task"] for item in answer["items"]]

    async def get(self, id: int) -> Task:
        return await self.request("GET", f"/v1/tasks/{id}")

    async def list(self, *, status: TaskStatus | None = None, type: str | None = None, agent_id: str | None = None, limit: int | None = None, cursor: str | None = None) -> TaskPage:
        query = {k: v for k, v in {"status": status, "type": type, "agentId": agent_id, "limit": limit, "cursor": cursor}.items() if v is not None}
        page = await self.request("GET", "/v1/tasks", params=query)
        return TaskPage(page["items"], page["nextCursor"])

    async def cancel(self, id: int, reason: str | None = None) -> Task:
        """Cancels a task; the agent running it is told at once (its handler is cancelled)."""
        return await self.request("DELETE", f"/v1/tasks/{id}", params={"reason": reason} if reason is not None else None)

    async def stats(self) -> dict[str, Any]:
        return await self.request("GET", "/v1/stats")

    async def wait_for(self, id: int, timeout: float | None = None) -> Task:
        """The task once it is completed, dead or cancelled.

        Watches the task's topic on the event stream (one socket per client, shared by every wait)
        and reads the task when an event says it ended, after the subscription is in place (so that
        an end before it is not missed) and again whenever the stream reconnects or stays silent for
        5 s: the event stream makes it fast, the reads make it right. Past the 1,000 topics a socket
        may hold, further waits read the task with backoff instead. Raises TimeoutError.
        """
        # The wait runs as a task of its own, timed from outside: httpx's cancellation (anyio) and
        # asyncio.timeout() do not always agree on whose cancel it was.
        waiting = asyncio.ensure_future(self._wait_until_final(id))
        try:
            done, _ = await asyncio.wait({waiting}, timeout=timeout)
        finally:
            if not waiting.done():
                waiting.cancel()
        if waiting in done:
            return waiting.result()
        raise TimeoutError(f"task {id} did not end within {timeout} s")

    async def _wait_until_final(self, id: int) -> Task:
        changed = asyncio.Event()

        def on_event(event: StreamEvent | None) -> None:
            if event is None or event.name in _FINAL_EVENTS:
                changed.set()

        task = await self.get(id)
        if task["status"] in FINAL_STATUSES:
            return task
        try:
            unwatch, subscribed = self._observer_socket().watch(f"task:{id}", on_event)
        except TopicsFull:
            return await self._poll_until_final(id)
        try:
            # Bounded: with an event stream that cannot connect (a proxy without WebSockets), the
            # reads every 5 s below still end the wait.
            await asyncio.wait({subscribed}, timeout=_RECHECK_S)
            if subscribed.done() and not subscribed.cancelled() and subscribed.exception():
                log.warning("fleetd event stream refused task:%s: %s", id, subscribed.exception())
            while True:
                changed.clear()
                task = await self.get(id)
                if task["status"] in FINAL_STATUSES:
                    return task
                try:
                    await asyncio.wait_for(changed.wait(), _RECHECK_S)
                except TimeoutError:
                    pass
        finally:
            unwatch()

    async def _poll_until_final(self, id: int) -> Task:
        """``wait_for`` beyond the topics one event socket may hold: reads with backoff, 50 ms to 1 s."""
        delay = 0.05
        while True:
            task = await self.get(id)
            if task["status"] in FINAL_STATUSES:
                return task
            await asyncio.sleep(delay)
            delay = min(1.0, delay * 2)

    async def run(self, type: str, payload: Any = None, *, timeout: float | None = None, **options: Any) -> Any:
        """Submits a task and waits for it: its result, or TaskFailedError (dead), TaskCancelledError."""
        task = await self.submit(type, payload, **options)
        done = await self.wait_for(task["id"], timeout)
        if done["status"] == "completed":
            return done["result"]
        if done["status"] == "cancelled":
            raise TaskCancelledError(done)
        raise TaskFailedError(done)

    # ---- events ----

    def _observer_socket(self) -> _Observer:
        if self._observer is None:
            self._observer = _Observer(self)
        return self._observer

    async def subscribe(self, topics: Sequence[str]) -> Subscription:
        """Events of ``topics`` (``tasks``, ``task:<id>``, ``agents``, ``locks``, ``queue:<type>``,
        ``stats``, ``pipelines``, ``run:<id>``), as an async iterator. The socket reconnects (with
        jittered backoff, to the next node when there are several) and subscribes again; events
        published while it was away are not replayed (the server keeps no history to resume from yet).
        Returns once the subscription is in place."""
        subscription = Subscription()
        observer = self._observer_socket()
        watches = [observer.watch(topic, subscription._push) for topic in topics]
        subscription._unwatch = lambda: [unwatch() for unwatch, _ in watches]
        try:
            await asyncio.gather(*(asyncio.shield(subscribed) for _, subscribed in watches))
        except BaseException:
            subscription.close()
            raise
        return subscription

    # ---- agents ----

    async def register_agent(self, name: str, capabilities: Sequence[str] = (), *, labels: dict[str, str] | None = None, max_concurrency: int | None = None) -> tuple[Agent, str]:
        """Registers an agent; returns it and its token (shown once)."""
        body: dict[str, Any] = {"name": name, "capabilities": list(capabilities)}
        if labels is not None:
            body["labels"] = labels
        if max_concurrency is not None:
            body["maxConcurrency"] = max_concurrency
        answer = await self.request("POST", "/v1/agents", body)
        return answer["agent"], answer["token"]

    def agent(self, name: str, capabilities: Sequence[str], concurrency: int = 1, **options: Any) -> AsyncAgent:
        """A worker: decorate handlers with ``@agent.task("type")`` (or one with ``@agent.handler``),
        then ``await agent.run()``. Options: see ``AsyncAgent``."""
        from .agent import AsyncAgent

        return AsyncAgent(self, name, capabilities, concurrency, **options)


class Subscription:
    """Events of a subscription: ``async for event in subscription``; ``close()`` ends it."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[StreamEvent | None] = asyncio.Queue()
        self._unwatch: Callable[[], object] = lambda: None
        self.closed = False
        #: Times the stream was lost and subscribed again (events in between are not replayed).
        self.reconnects = 0

    def _push(self, event: StreamEvent | None) -> None:
        if event is None:
            self.reconnects += 1
        else:
            self._queue.put_nowait(event)

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        return self

    async def __anext__(self) -> StreamEvent:
        event = await self._queue.get()
        if event is None:
            raise StopAsyncIteration
        return event

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._unwatch()
            self._queue.put_nowait(None)


class TopicsFull(Exception):
    """The observer socket holds as many topics as the server allows."""


class _Observer:
    """One observer socket (``/v1/events``) per client, shared by subscriptions and ``wait_for``.

    Each topic has listeners; a topic is subscribed on the server while it has one. When the socket
    is lost, every listener is called with None (it may have missed events) and the socket
    reconnects, with jittered backoff and to the next node, and subscribes its topics again.
    """

    def __init__(self, fleet: AsyncFleet) -> None:
        self._fleet = fleet
        self._listeners: dict[str, list[Callable[[StreamEvent | None], None]]] = {}
        self._subscribed: dict[str, asyncio.Future[None]] = {}
        self._socket: Any = None
        self._changes: list[tuple[str, str]] = []
        self._runner: asyncio.Task[None] | None = None
        self._closing = False

    def watch(self, topic: str, listener: Callable[[StreamEvent | None], None]) -> tuple[Callable[[], None], asyncio.Future[None]]:
        """Calls ``listener`` with each event of ``topic``; returns the undo, and a future resolved
        once the server has the subscription (from then on no event is missed), or failed with its
        refusal. Raises TopicsFull when the socket holds as many topics as the server allows."""
        if self._runner is None:
            self._runner = asyncio.create_task(self._run())
        listeners = self._listeners.get(topic)
        if listeners is None:
            if len(self._listeners) >= MAX_TOPICS:
                raise TopicsFull(f"the event stream holds {MAX_TOPICS} topics already")
            listeners = self._listeners[topic] = []
            self._subscribed[topic] = asyncio.get_running_loop().create_future()
            if self._socket is not None:
                self._queue_change("subscribe", [topic])
        listeners.append(listener)

        def unwatch() -> None:
            if listener not in listeners:
                return
            listeners.remove(listener)
            if not listeners and self._listeners.get(topic) is listeners:
                del self._listeners[topic]
                self._subscribed.pop(topic, None)
                if self._socket is not None:
                    self._queue_change("unsubscribe", [topic])

        return unwatch, self._subscribed[topic]

    def _queue_change(self, change: Literal["subscribe", "unsubscribe"], topics: Iterable[str]) -> None:
        """Changes made in one tick go out together, in order, in messages of at most 100 topics (the
        server's limit): a thousand waits cost a few messages, each answered with the socket's topics."""
        if not self._changes:
            asyncio.get_running_loop().call_soon(self._flush_changes)
        self._changes.extend((change, topic) for topic in topics)

    def _flush_changes(self) -> None:
        changes, self._changes = self._changes, []
        for change, run in itertools.groupby(changes, key=lambda c: c[0]):
            topics = [topic for _, topic in run]
            for start in range(0, len(topics), 100):
                asyncio.create_task(self._send({"type": change, "topics": topics[start : start + 100]}))

    async def _send(self, message: dict[str, Any]) -> None:
        try:
            await self._socket.send(json.dumps(message))
        except Exception:  # the socket is going: _run subscribes every topic again on the next one
            pass

    async def _run(self) -> None:
        attempt = 0
        while not self._closing:
            node = self._fleet.url
            try:
                async with ws_connect(node.replace("http", "ws", 1) + "/v1/events", self._fleet._headers(self._fleet.api_key), self._fleet.ssl_context) as socket:
                    self._socket = socket
                    attempt = 0
                    self._queue_change("subscribe", self._listeners)
                    async for raw in socket:
                        self._on_message(json.loads(raw))
                    if socket.close_code == 1006:
                        self._fleet.failover(node)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # refused, reset, a node gone: try again, elsewhere when there are nodes
                self._fleet.failover(node)
                log.warning("fleetd event stream: %s; reconnecting", err)
            finally:
                self._socket = None
            for listeners in list(self._listeners.values()):
                for listener in list(listeners):
                    listener(None)
            attempt += 1
            await asyncio.sleep(full_jitter(attempt, 0.1, 5.0))

    def _on_message(self, message: dict[str, Any]) -> None:
        if message["type"] == "events":
            for e in message["events"]:
                for listener in list(self._listeners.get(e["topic"], ())):
                    listener(StreamEvent(e["topic"], e["name"], e["data"], e["at"]))
        elif message["type"] == "subscribed":
            for topic in message["topics"]:
                future = self._subscribed.get(topic)
                if future is not None and not future.done():
                    future.set_result(None)
        elif message["type"] == "error":
            # Observer errors carry no reference: they fail the subscriptions still waiting for an answer.
            err = FleetApiError.from_wire(message["error"])
            for future in self._subscribed.values():
                if not future.done():
                    future.set_exception(err)

    async def close(self) -> None:
        self._closing = True
        if self._runner is not None:
            self._runner.cancel()
            try:
                await self._runner
            except asyncio.CancelledError:
                pass
