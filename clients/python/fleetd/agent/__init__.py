"""``AsyncAgent``: a worker process's side of fleetd, on asyncio.

Tasks arrive by WebSocket push under credit (never more than ``concurrency`` at once), or by HTTP
long-poll when the server or a proxy refuses WebSockets. Each running task's lease is extended every
``leaseMs / 2``; a handler's return value completes its task, an exception fails it for a retry,
``NonRetryableError`` dead-letters it.

A running task learns that it was cancelled or timed out from a ``cancel`` message on the agent's
socket at once (over long-poll, and when its lease was lost, from the answer to its next lease
extension): an ``async def`` handler is then cancelled (``asyncio.CancelledError`` inside it), a
plain ``def`` handler, which runs in a thread, sees ``ctx.cancelled`` set. Nothing is reported for it.
"""
from __future__ import annotations

import asyncio
import inspect
import json
import logging
import signal
import socket as _socket
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Union

from .._backoff import full_jitter, refused_status, ws_connect
from ..errors import FleetApiError, FleetUnavailableError, NonRetryableError, RetryLaterError
from ..wire import AGENT_PROTOCOL_VERSION, Task

if TYPE_CHECKING:
    from ..client import AsyncFleet

log = logging.getLogger("fleetd.agent")

LONG_POLL_MS = 25_000
POLL_HEARTBEAT_S = 10.0
REPORT_ATTEMPTS = 5
#: Most items the server takes in one batch.
MAX_BATCH_ITEMS = 1000
#: Answers to the upgrade that say the server (or a proxy before it) does not do WebSockets here.
NO_WEBSOCKET = {400, 404, 405, 426, 501}
#: Refusals that mean "not now" rather than "no": a completion or failure is reported again after them.
TRANSIENT_CODES = {
    "FLEETD_ERR_STORAGE_FULL",
    "FLEETD_ERR_STORE_UNAVAILABLE",
    "FLEETD_ERR_UNAVAILABLE",
    "FLEETD_ERR_SHUTTING_DOWN",
    "FLEETD_ERR_RATE_LIMITED",
}
#: Answers to an extension that say the task is no longer this agent's to work.
GONE_CODES = {"FLEETD_ERR_LEASE_LOST", "FLEETD_ERR_TASK_STATE", "FLEETD_ERR_NOT_FOUND", "FLEETD_ERR_CANCELLED", "FLEETD_ERR_TIMEOUT"}
#: What the server says ended an attempt, as ``ctx.cancel_reason`` tells it.
ENDED_BY = {"FLEETD_ERR_CANCELLED": "cancelled", "FLEETD_ERR_TIMEOUT": "timed out"}


def _transient(err: BaseException) -> bool:
    """Whether a report or an extension failed for a passing reason (TRANSIENT_CODES, a connection),
    rather than being refused for good."""
    return not isinstance(err, FleetApiError) or err.code in TRANSIENT_CODES


def _extend_every(task: Task) -> float:
    """How often a running task's lease is extended, in seconds: twice a lease."""
    return max(0.05, task["leaseMs"] / 2000)


def _cork(socket: Any) -> Any:
    """Holds what is written on the connection's TCP socket until ``_uncork`` (Linux's TCP_CORK), so
    that messages written one after the other leave together; None where that is not available."""
    if socket is None or not hasattr(_socket, "TCP_CORK"):
        return None
    transport = getattr(socket, "transport", None)
    raw = transport.get_extra_info("socket") if transport is not None else None
    if raw is None:
        return None
    try:
        raw.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_CORK, 1)
    except OSError:
        return None
    return raw


def _uncork(raw: Any) -> None:
    try:
        raw.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_CORK, 0)
    except OSError:  # closed meanwhile: nothing is left to send
        pass


@dataclass
class TaskContext:
    """What a handler gets beside its task."""

    task: Task
    #: Set when the task is cancelled, its lease is lost, or the agent stops without waiting for it:
    #: a blocking handler checks it (``ctx.cancelled.wait(1)``) and returns early.
    cancelled: threading.Event = field(default_factory=threading.Event)
    #: Why: ``"cancelled"``, ``"timed out"`` (its executionTimeoutMs passed), ``"lease lost"`` or
    #: ``"agent stopping"``; None while the task is its own.
    cancel_reason: str | None = None

    #: What ``usage()`` reported so far, in the wire's names: sent with the task's outcome.
    reported_usage: dict[str, Any] | None = None
    _usage_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def attempt(self) -> int:
        """1 on the first run of the task, 2 on its first retry, ..."""
        return self.task["attempts"]

    def usage(
        self,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        cost_usd: float | None = None,
        model: str | None = None,
    ) -> None:
        """Reports what the task used (an LLM call's tokens and cost, say). Calls add up over the run
        (the model is the last one named), and the sum goes with the task's completion, failure or
        release, where fleetd counts it for the task's type and concurrency key (usage sums,
        budgets). A negative number, or a token count that is not a whole number, is a ValueError."""
        fields = {"inputTokens": input_tokens, "outputTokens": output_tokens, "costUsd": cost_usd}
        for name, value in fields.items():
            if value is None:
                continue
            whole = name != "costUsd"
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value in (float("inf"), float("-inf")) or value < 0 or (whole and value != int(value)):
                raise ValueError(f"usage {name} must be a {'whole' if whole else 'finite'} number of at least 0, not {value!r}")
        with self._usage_lock:
            total = dict(self.reported_usage or {})
            for name, value in fields.items():
                if value is not None:
                    total[name] = total.get(name, 0) + (int(value) if name != "costUsd" else value)
            if model is not None:
                total["model"] = model
            self.reported_usage = total

    def release(self, delay_ms: float, reason: str | None = None) -> None:
        """Gives the task back for later without spending an attempt (raises ``RetryLaterError``, so
        the handler ends here): it returns to the queue after ``delay_ms`` milliseconds."""
        raise RetryLaterError(delay_ms, reason)


Handler = Union[Callable[[Task, TaskContext], Awaitable[Any]], Callable[[Task, TaskContext], Any]]


@dataclass
class _Running:
    task: Task
    ctx: TaskContext
    job: asyncio.Future[Any] | None = None
    done: asyncio.Future[None] | None = None
    extend_timer: asyncio.TimerHandle | None = None
    #: The handler has returned or raised: its lease needs no more extending.
    handled: bool = False
    #: Its outcome is queued and its slot's credit granted: a task of its id pushed now is a new
    #: lease of it (released, or failed and retried, back to this agent), unless it is this lease
    #: handed again (``_same_lease``).
    finished: bool = False
    #: The handler gave the task back (``ctx.release``): its next lease has the same attempt number.
    given_back: bool = False


def _same_lease(running: _Running, task: Task) -> bool:
    """The task is the lease ``running`` holds, handed again: a lost claim's tasks, say, by a node
    that did not see another node hand them over, while the run's outcome is on its way. A new lease
    of a task counts one more attempt than the one before, but after a release, which gives its
    attempt back (excluded here), or an operator's retry, which starts the count again (told apart
    by ``claimedAt``)."""
    return not running.given_back and task["attempts"] == running.task["attempts"] and task.get("claimedAt") == running.task.get("claimedAt")


class AsyncAgent:
    """A worker. Make one with ``fleet.agent(name, capabilities, concurrency)``.

    Options: ``labels``; ``transport`` ``"auto"`` (WebSocket, falling back to long-poll when the
    upgrade is refused), ``"ws"`` or ``"poll"``; ``reconnect=(min_s, max_s)``, the full-jitter backoff
    bounds (0.25 s and 10 s) for reconnecting and for waiting on a server that is not up yet;
    ``agent_id`` and ``token`` of an agent registered already.
    """

    def __init__(
        self,
        fleet: AsyncFleet,
        name: str,
        capabilities: Sequence[str],
        concurrency: int = 1,
        *,
        labels: dict[str, str] | None = None,
        transport: Literal["auto", "ws", "poll"] = "auto",
        reconnect: tuple[float, float] = (0.25, 10.0),
        agent_id: str | None = None,
        token: str | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.fleet = fleet
        self.name = name
        self.capabilities = list(capabilities)
        self.concurrency = concurrency
        self.labels = labels
        self.transport = transport
        self.reconnect = reconnect
        self.id = agent_id
        self._token = token
        self._handlers: dict[str, Handler] = {}
        self._default: Handler | None = None
        self._listeners: dict[str, list[Callable[..., None]]] = {}
        self._running: dict[int, _Running] = {}
        #: Of each list of leases on its way (_resume_leases), the tasks that ended meanwhile: not to start again.
        self._ended_while_resuming: list[set[int]] = []
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next_ref = 1
        self._socket: Any = None
        #: Credit granted in this tick, not sent yet.
        self._credit = 0
        # Completions, failures and extensions of this loop iteration, sent together when it ends.
        self._outbox: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._outbox_scheduled = False
        self._stopping = False
        self._stopped = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._connected: asyncio.Future[str] | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._threads: ThreadPoolExecutor | None = None

    # ---- handlers and events ----

    def task(self, type: str) -> Callable[[Handler], Handler]:
        """Decorator: the handler of ``type`` tasks. ``async def`` runs on the loop, ``def`` in a thread."""

        def register(fn: Handler) -> Handler:
            self._handlers[type] = fn
            return fn

        return register

    def handler(self, fn: Handler) -> Handler:
        """Decorator: the handler of every task type that has none of its own."""
        self._default = fn
        return fn

    def on(self, event: str, listener: Callable[..., None]) -> None:
        """``connected`` (transport), ``disconnected`` (close code), ``task`` (task), ``error`` (exception)."""
        self._listeners.setdefault(event, []).append(listener)

    def _emit(self, event: str, *args: Any) -> None:
        for listener in self._listeners.get(event, ()):
            listener(*args)

    def _warn(self, err: BaseException) -> None:
        if self._listeners.get("error"):
            self._emit("error", err)
        else:
            log.warning("fleetd agent: %s", err)

    @property
    def in_flight(self) -> int:
        """Tasks whose handlers are running now."""
        return len(self._running)

    # ---- life ----

    async def start(self) -> None:
        """Registers (waiting for a server that is not up yet) and returns once tasks can arrive."""
        if self._loop_task is not None:
            raise RuntimeError("start() was called already")
        if self.id is None or self._token is None:
            await self._register()
        self._connected = asyncio.get_running_loop().create_future()
        self._loop_task = asyncio.create_task(self._poll_loop() if self.transport == "poll" else self._socket_loop())
        transport = await self._connected
        self._emit("connected", transport)

    async def stop(self, timeout: float = 30.0) -> None:
        """Takes no new work, waits for running handlers (up to ``timeout`` seconds), then cancels
        those still running; their tasks fail retryably and go back to the queue."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        pending = [r.done for r in self._running.values() if r.done]
        if pending:
            _, late = await asyncio.wait(pending, timeout=timeout)
            for r in list(self._running.values()):
                if r.done in late:
                    self._cancel(r, "agent stopping")
            await asyncio.gather(*[r.done for r in self._running.values() if r.done])
        if self._socket is not None:
            await self._socket.close(1000, "agent stopped")
        if self._loop_task is not None:
            self._loop_task.cancel()
            try:
                await self._loop_task
            except asyncio.CancelledError:
                pass
        if self._threads:
            self._threads.shutdown(wait=False)
        self._stopped.set()

    async def run(self, stop_signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT), stop_timeout: float = 30.0) -> None:
        """Starts, works until one of ``stop_signals`` arrives (or ``stop()`` is called), then stops
        gracefully: in-flight tasks are finished (up to ``stop_timeout`` seconds), none is started."""
        loop = asyncio.get_running_loop()
        asked = asyncio.Event()
        for sig in stop_signals:
            loop.add_signal_handler(sig, asked.set)
        try:
            await self.start()
            waits = [asyncio.create_task(asked.wait()), asyncio.create_task(self._stopped.wait())]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for wait in waits:
                wait.cancel()
            await self.stop(stop_timeout)
        finally:
            for sig in stop_signals:
                loop.remove_signal_handler(sig)

    async def _register(self) -> None:
        """Waits for a server that is not up yet (or restarting) with jittered backoff rather than
        failing: an agent is often started before, or alongside, its server. A registration whose
        answer was lost is sent again; the one that was lost goes offline unused."""
        attempt = 0
        while True:
            try:
                agent, self._token = await self.fleet.register_agent(self.name, self.capabilities, labels=self.labels, max_concurrency=self.concurrency)
                self.id = agent["id"]
                return
            except (FleetUnavailableError, FleetApiError) as err:
                if isinstance(err, FleetApiError) and not 502 <= err.status <= 504:
                    raise
                attempt += 1
                await self._retry_after(err, full_jitter(attempt, *self.reconnect))

    async def _retry_after(self, err: BaseException, delay: float) -> None:
        """Says that the agent waits and will try again, then waits."""
        self._warn(FleetUnavailableError(f"{err}; retrying in {delay:.1f} s"))
        await asyncio.sleep(delay)

    def _fatal(self, err: BaseException) -> None:
        self._stopping = True
        if self._connected is not None and not self._connected.done():
            self._connected.set_exception(err)
        else:
            self._warn(err)
        self._stopped.set()

    def _ready(self, transport: str) -> None:
        if self._connected is not None and not self._connected.done():
            self._connected.set_result(transport)
        else:
            self._emit("connected", transport)

    # ---- WebSocket push ----

    async def _socket_loop(self) -> None:
        attempt = 0
        while not self._stopping:
            node = self.fleet.url
            url = f"{node.replace('http', 'ws', 1)}/v1/agents/{self.id}/stream?protocol={AGENT_PROTOCOL_VERSION}"
            try:
                async with ws_connect(url, self.fleet._headers(self._token), self.fleet.ssl_context, max_size=None) as socket:
                    await self._serve(socket)
                    attempt = 0
                    # 1006: dropped without a closing handshake, the process or its machine died.
                    if socket.close_code == 1006:
                        self.fleet.failover(node)
                    self._emit("disconnected", socket.close_code)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                status = refused_status(err)
                if status == 401:
                    return self._fatal(FleetApiError.of(401, "FLEETD_ERR_UNAUTHORIZED", f"the agent stream refused the token: {err}"))
                if status in NO_WEBSOCKET and self.transport != "ws":
                    return await self._poll_loop()
                if status is None or 502 <= status <= 504:
                    self.fleet.failover(node)
                if self._stopping:
                    return
                attempt += 1
                await self._retry_after(err, full_jitter(attempt, *self.reconnect))
                continue
            if not self._stopping:
                attempt += 1
                await asyncio.sleep(full_jitter(attempt, *self.reconnect))

    async def _serve(self, socket: Any) -> None:
        """Reads one connection until it closes: the welcome, then pushed tasks and answers."""
        welcome = json.loads(await socket.recv())
        if welcome.get("type") != "welcome":
            raise ConnectionError(f"expected a welcome, got {welcome.get('type')}")
        self._socket = socket
        try:
            for task in welcome["leased"]:
                self._start(task, resumed=True)
            # A slot's credit goes back when its outcome is queued, not when it is answered, and a
            # grant made while no socket was open is lost: the welcome grants every slot but those
            # whose handler is still at work.
            self._grant(self.concurrency - sum(1 for running in self._running.values() if not running.finished))
            self._ready("ws")
            async for raw in socket:
                message = json.loads(raw)
                kind = message["type"]
                if kind == "tasks":
                    for task in message["tasks"]:
                        self._start(task)
                    continue
                if kind == "cancel":
                    # The server ended the attempt (a cancel, its execution timeout): stop at once.
                    running = self._running.get(message["id"])
                    if running is not None:
                        self._cancel(running, ENDED_BY.get(message["code"], "cancelled"))
                    continue
                waiter = self._pending.pop(message.get("ref"), None) if isinstance(message.get("ref"), int) else None
                if waiter is not None and not waiter.done():
                    waiter.set_result(message)
                elif kind == "error":
                    self._warn(FleetApiError.from_wire(message["error"]))
        finally:
            self._socket = None
            for waiter in self._pending.values():
                if not waiter.done():
                    waiter.set_exception(ConnectionError("disconnected"))
            self._pending.clear()

    def _grant(self, add: int) -> None:
        """Grants ``add`` more tasks; grants made in one tick go out as one message, with the tick's
        outcomes when there are any (see ``_flush_outbox``). (The server never leases an agent more
        than its concurrency, whatever the credit: a grant that crosses a reconnect costs nothing.)"""
        if add <= 0 or self._stopping:
            return
        if self._credit == 0 and not self._outbox_scheduled:
            asyncio.get_running_loop().call_soon(self._send_credit)
        self._credit += add

    def _send_credit(self) -> None:
        add, self._credit = self._credit, 0
        if add > 0 and self._socket is not None and not self._stopping:
            asyncio.create_task(self._send_quietly(self._socket, {"type": "credit", "add": add}))

    @staticmethod
    async def _send_quietly(socket: Any, message: dict[str, Any]) -> None:
        try:
            await socket.send(json.dumps(message))
        except Exception:  # the socket is closing: the next one starts with a fresh grant
            pass

    async def _over_socket(self, message: dict[str, Any]) -> dict[str, Any]:
        """A request over the socket, answered by its ack; raises ConnectionError when the socket is gone."""
        socket = self._socket
        if socket is None:
            raise ConnectionError("not connected")
        ref = self._next_ref
        self._next_ref += 1
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ref] = answer
        try:
            await socket.send(json.dumps({**message, "ref": ref}))
        except Exception as err:
            self._pending.pop(ref, None)
            raise ConnectionError(str(err)) from err
        reply = await answer
        if reply["type"] == "error":
            raise FleetApiError.from_wire(reply["error"])
        return reply

    async def _send(self, message: dict[str, Any], path: str, body: dict[str, Any]) -> None:
        """Over the socket when it is open, else over HTTP (on the next node, when one failed)."""
        try:
            await self._over_socket(message)
        except ConnectionError:
            await self.fleet.request("POST", path, {"agentId": self.id, **body}, credential=self._token)

    async def _release(self, message: dict[str, Any]) -> None:
        """Gives a task back: a ``release`` message on the socket, else ``POST /v1/tasks/:id/release``
        (also when a node from before the agent stream knew ``release`` refuses the message)."""
        body = {k: v for k, v in message.items() if k not in ("type", "id")}
        path = f"/v1/tasks/{message['id']}/release?return=minimal"
        try:
            await self._send(message, path, body)
        except FleetApiError as err:
            if err.code != "FLEETD_ERR_VALIDATION" or self._socket is None:
                raise
            await self.fleet.request("POST", path, {"agentId": self.id, **body}, credential=self._token)

    def _settle(self, item: dict[str, Any]) -> asyncio.Future[None]:
        """Queues a completion, failure or extension (``{"op", "id", ...}``) for the end of this
        iteration of the event loop, when everything queued in it goes out together: one ``batch``
        message or one ``POST /v1/tasks/complete`` (alone, the single message or route, which every
        server takes). Each settles with its own item's answer; none waits longer than the iteration."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._outbox.append((item, future))
        if not self._outbox_scheduled:
            self._outbox_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_outbox)
        return future

    def _flush_outbox(self) -> None:
        """The iteration's outcomes, then the credit they freed: the server reads them together, and
        completes the tasks and leases the next in one transaction and one turn, not two."""
        self._outbox_scheduled = False
        # Both messages are written at the first step of their tasks, which run one after the
        # other in the next iteration; corked meanwhile (Linux), they leave in one segment.
        corked = _cork(self._socket)
        try:
            queued, self._outbox = self._outbox, []
            batch: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
            ids: set[int] = set()
            for entry in queued:
                # The server refuses a task named twice in one batch: a second item waits for the next iteration.
                if entry[0]["id"] in ids or len(batch) >= MAX_BATCH_ITEMS:
                    self._outbox.append(entry)
                else:
                    ids.add(entry[0]["id"])
                    batch.append(entry)
            if self._outbox:
                self._outbox_scheduled = True
                asyncio.get_running_loop().call_soon(self._flush_outbox)
            if len(batch) == 1:
                asyncio.create_task(self._send_one(*batch[0]))
            elif batch:
                asyncio.create_task(self._send_batch(batch))
            self._send_credit()
        finally:
            # After the tasks' first steps, whatever became of them: a cork left on holds every
            # later write up to 200 ms.
            if corked is not None:
                asyncio.get_running_loop().call_soon(_uncork, corked)

    async def _send_one(self, item: dict[str, Any], future: asyncio.Future[None]) -> None:
        # The route's answer is not read: ?return=minimal leaves the payload out of it, where a long
        # prompt would come back at every extension (a server that predates it ignores it).
        body = {k: v for k, v in item.items() if k not in ("op", "id")}
        try:
            path = f"/v1/tasks/{item['id']}/{item['op']}?return=minimal"
            await self._send({"type": item["op"], "id": item["id"], **body}, path, body)
        except Exception as err:
            if not future.done():
                future.set_exception(err)
            return
        if not future.done():
            future.set_result(None)

    async def _send_batch(self, batch: list[tuple[dict[str, Any], asyncio.Future[None]]]) -> None:
        items = [item for item, _ in batch]
        try:
            try:
                results = (await self._over_socket({"type": "batch", "items": items}))["items"]
            except ConnectionError:
                answer = await self.fleet.request("POST", "/v1/tasks/complete", {"agentId": self.id, "items": items}, credential=self._token)
                results = answer["items"]
        except Exception as err:
            # A node that does not know batches (an older version) refuses them: one by one instead.
            unknown = isinstance(err, FleetApiError) and err.status in (400, 404)
            for item, future in batch:
                if unknown:
                    asyncio.create_task(self._send_one(item, future))
                elif not future.done():
                    future.set_exception(err)
            return
        for (_, future), result in zip(batch, results):
            if future.done():
                continue
            if result.get("error"):
                future.set_exception(FleetApiError.from_wire(result["error"]))
            else:
                future.set_result(None)

    # ---- long-poll ----

    async def _poll_loop(self) -> None:
        heartbeat = asyncio.create_task(self._heartbeats())
        # A restarted agent takes back the leases it held, as a socket's welcome hands them over.
        not_resumed = await self._resume_leases()
        if not_resumed is not None:
            self._warn(not_resumed)
        self._ready("poll")
        attempt = 0
        # A claim answered 503 with outcomeUnknown: the server lost its database connection with the
        # claim on its way, and the claim may have leased tasks all the same. They are taken back once
        # the leases can be read (after the Retry-After wait), on whichever node answers.
        leases_in_doubt = False
        try:
            while not self._stopping:
                if leases_in_doubt and await self._resume_leases() is None:
                    leases_in_doubt = False
                free = self.concurrency - len(self._running)
                if free <= 0:
                    self._slot_freed.clear()
                    await self._slot_freed.wait()
                    continue
                try:
                    # Not repeated by the client: a repeat would lease more tasks, while the server may
                    # have leased some to the answer that was lost. Those are taken back below.
                    answer = await self.fleet.request(
                        "POST", "/v1/tasks/claim", {"agentId": self.id, "max": free, "waitMs": LONG_POLL_MS}, credential=self._token, timeout=LONG_POLL_MS / 1000 + 10
                    )
                    attempt = 0
                    for task in answer["tasks"]:
                        self._start(task)
                except (FleetUnavailableError, FleetApiError) as err:
                    if isinstance(err, FleetApiError) and err.status in (401, 404):
                        return self._fatal(err)
                    if isinstance(err, FleetApiError) and err.details.get("outcomeUnknown") is True:
                        leases_in_doubt = True
                    attempt += 1
                    # A dropped keep-alive connection, say: once the agent holds what the lost answer
                    # leased (rather than waiting for those leases to lapse), nothing is amiss. A
                    # second drop in a row is reported, and waited out.
                    if attempt == 1 and isinstance(err, FleetUnavailableError) and err.answer_may_be_lost and await self._resume_leases() is None:
                        continue
                    await self._retry_after(err, full_jitter(attempt, *self.reconnect))
        finally:
            heartbeat.cancel()

    async def _resume_leases(self) -> BaseException | None:
        """Starts the tasks leased to this agent that it is not running (GET /v1/agents/:id/leases).

        A task that ends while the list is on its way is not started again. Answers the error that
        kept the list away, if one did; a server from before the route (404) has nothing to resume.
        """
        ended: set[int] = set()
        self._ended_while_resuming.append(ended)
        try:
            answer = await self.fleet.request("GET", f"/v1/agents/{self.id}/leases", credential=self._token)
            for task in answer["tasks"]:
                if task["id"] not in ended:
                    self._start(task, resumed=True)
            return None
        except (FleetUnavailableError, FleetApiError) as err:
            return None if self._stopping or (isinstance(err, FleetApiError) and err.status == 404) else err
        finally:
            self._ended_while_resuming.remove(ended)

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(POLL_HEARTBEAT_S)
            try:
                # Safe to repeat: a heartbeat whose answer was lost is sent again.
                await self.fleet.request("POST", f"/v1/agents/{self.id}/heartbeat", credential=self._token, retry=True)
            except Exception as err:
                self._warn(err)

    # ---- running tasks ----

    def _start(self, task: Task, resumed: bool = False) -> None:
        """Runs a task leased to this agent. ``resumed``: a lease the agent may hold already (a socket's
        welcome, the leases taken back after a restart), run only if it is not running here; a pushed
        or claimed task is a new lease, run unless its id's handler is still at work or this is the
        lease its run holds (``_same_lease``)."""
        current = self._running.get(task["id"])
        if current is not None and task["attempts"] > current.task["attempts"]:
            # A later attempt of a task still running here: its lease lapsed (the agent cut off past
            # its grace, say) and the task came back to this agent. The earlier run's outcome would be
            # taken for this attempt's: it is dropped, and this lease runs afresh.
            self._cancel(current, "lease lost")
            current = None
        if current is not None and (resumed or not current.finished or _same_lease(current, task)):
            if resumed and not current.handled and current.ctx.cancel_reason is None:
                # Running here through a restart of the server or a lost answer, its extensions may
                # have failed meanwhile: the lease may be about to lapse.
                asyncio.create_task(self._extend_resumed(current))
            elif not resumed:
                # Handed again over the socket, it took a credit for a slot it does not fill: given back.
                self._grant(1)
            return
        if self._stopping:
            # Arrived on the wire after stop(): give it straight back for another agent.
            fail = {"type": "fail", "id": task["id"], "error": {"code": "AGENT_STOPPING", "message": "the agent is stopping"}, "retryable": True}
            asyncio.create_task(self._report(task["id"], fail))
            return
        running = _Running(task, TaskContext(task))
        self._running[task["id"]] = running
        self._emit("task", task)
        running.done = asyncio.create_task(self._execute(running, resumed))

    async def _execute(self, running: _Running, resumed: bool) -> None:
        task, ctx = running.task, running.ctx
        if resumed:
            # Taken before a restart or a reconnect, the lease may be about to lapse: extended at
            # once, not half a lease from now.
            asyncio.create_task(self._extend_resumed(running))
        else:
            self._extend_later(running)
        outcome: dict[str, Any] | None
        try:
            result = await self._call(running)
            try:
                json.dumps(result)
                outcome = {"type": "complete", "id": task["id"], "result": result}
            except (TypeError, ValueError) as err:
                # It would fail the same way every time: not worth a retry.
                outcome = {"type": "fail", "id": task["id"], "error": {"name": "ResultNotJson", "message": f"the handler's result is not JSON: {err}"}, "retryable": False}
        except asyncio.CancelledError:
            outcome = None
        except RetryLaterError as err:
            running.given_back = True
            outcome = {"type": "release", "id": task["id"], "delayMs": max(0, round(err.delay_ms))}
            if err.reason:
                outcome["reason"] = err.reason[:1000]
        except Exception as err:
            outcome = {"type": "fail", "id": task["id"], "error": {"name": type(err).__name__, "message": str(err)}, "retryable": not isinstance(err, NonRetryableError)}
        finally:
            running.handled = True
            if running.extend_timer is not None:
                running.extend_timer.cancel()
        try:
            if ctx.cancel_reason == "agent stopping":
                outcome = {"type": "fail", "id": task["id"], "error": {"name": "AgentStopping", "message": "the agent stopped before the task finished"}, "retryable": True}
            elif ctx.cancel_reason is not None:
                outcome = None  # cancelled or taken away: the server would refuse whatever is said
            if outcome is not None:
                if ctx.reported_usage:
                    outcome["usage"] = ctx.reported_usage
                report = asyncio.ensure_future(self._report(task["id"], outcome))
                # Once the report has queued the outcome, the slot's credit goes with it, before the
                # answer: the server completes the task and leases the next in one round trip, not two.
                await asyncio.sleep(0)
                running.finished = True
                self._grant(1)
                await report
        finally:
            if self._running.get(task["id"]) is running:
                del self._running[task["id"]]
            for ended in self._ended_while_resuming:
                ended.add(task["id"])
            self._slot_freed.set()
            if not running.finished:
                running.finished = True
                self._grant(1)

    async def _call(self, running: _Running) -> Any:
        task, ctx = running.task, running.ctx
        handler = self._handlers.get(task["type"], self._default)
        if handler is None:
            raise NonRetryableError(f"this agent has no handler for {task['type']} tasks")
        if inspect.iscoroutinefunction(handler):
            running.job = asyncio.ensure_future(handler(task, ctx))
        else:
            if self._threads is None:
                self._threads = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="fleetd-handler")
            running.job = asyncio.get_running_loop().run_in_executor(self._threads, handler, task, ctx)
        return await running.job

    def _cancel(self, running: _Running, reason: str) -> None:
        if running.ctx.cancel_reason is not None:
            return
        running.ctx.cancel_reason = reason
        running.ctx.cancelled.set()
        # A thread cannot be stopped from outside: a blocking handler sees ctx.cancelled and returns.
        if isinstance(running.job, asyncio.Task):
            running.job.cancel()

    def _extend_later(self, running: _Running) -> None:
        """Extends the lease every ``leaseMs / 2``, on a timer rather than a task per running task."""
        every = _extend_every(running.task)
        # One timer a task, however many extensions were in flight (an early one for a resumed lease).
        if running.extend_timer is not None:
            running.extend_timer.cancel()
        running.extend_timer = asyncio.get_running_loop().call_later(every, lambda: asyncio.create_task(self._extend(running)))

    async def _extend(self, running: _Running) -> bool:
        """Extends the lease, and sets the next extension; False when it failed for a passing reason (a
        server restarting, a connection lost), and may be tried again."""
        done = True
        try:
            await self._settle({"op": "extend", "id": running.task["id"]})
        except Exception as err:
            if isinstance(err, FleetApiError) and err.code in GONE_CODES:
                ended = ENDED_BY.get(err.code) or ("cancelled" if err.details.get("status") == "cancelled" else "lease lost")
                self._cancel(running, ended)
                return True
            self._warn(err)
            done = not _transient(err)
        if not running.handled and running.ctx.cancel_reason is None:
            self._extend_later(running)
        return done

    async def _extend_resumed(self, running: _Running) -> None:
        """A resumed lease's first extension. The lease may be about to lapse, so one that fails for a
        passing reason (the server just restarted and answers 503, say) is tried again shortly, until
        the regular extension half a lease later is due, rather than left to it."""
        regular_at = time.monotonic() + _extend_every(running.task)
        attempt = 1
        while not await self._extend(running):
            delay = full_jitter(attempt, 0.05, 1.0)
            if time.monotonic() + delay >= regular_at:
                return
            await asyncio.sleep(delay)
            if running.handled or running.ctx.cancel_reason is not None:
                return
            attempt += 1

    async def _report(self, id: int, message: dict[str, Any]) -> None:
        """Completes, fails or releases a task, through disconnects and passing troubles of the server (a full
        disk, a restart); a refusal (lease lost) is final."""
        item = {"op": message["type"], **{k: v for k, v in message.items() if k != "type"}}
        for attempt in range(1, REPORT_ATTEMPTS + 1):
            try:
                if message["type"] == "release":
                    await self._release(message)
                else:
                    await self._settle(item)
                return
            except Exception as err:
                if not _transient(err) or attempt >= REPORT_ATTEMPTS:
                    self._warn(err)
                    return
                await asyncio.sleep(full_jitter(attempt, 0.25, 5.0))
