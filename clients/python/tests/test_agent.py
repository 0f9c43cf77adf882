"""Python agents against a real fleetd: both transports, cancellation, crashes, graceful stop, run()."""
from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

import fleetd
from fleetd import AsyncFleet, Fleet, NonRetryableError, TaskContext

from .conftest import NODE, ROOT, Processes, Server, api, eventually, start_fleetd, stop


def fleet_of(server: Server, **options: Any) -> AsyncFleet:
    return AsyncFleet(server.url, api_key=server.key, **options)


def test_a_thousand_tasks_through_agents_on_both_transports_each_done_exactly_once(server: Server) -> None:
    kind = "py-many"
    count = 1000

    async def main() -> None:
        async with fleet_of(server) as fleet:
            calls: Counter[int] = Counter()
            handled = asyncio.Event()
            agents = [fleet.agent(f"many-{transport}", [kind], concurrency=16, transport=transport) for transport in ("ws", "poll")]
            for agent in agents:

                @agent.task(kind)
                async def double(task: fleetd.Task, ctx: TaskContext) -> int:
                    calls[task["id"]] += 1
                    if len(calls) == count:
                        handled.set()
                    await asyncio.sleep(0)
                    return task["payload"] * 2

                await agent.start()
            try:
                tasks = await fleet.submit_batch([{"type": kind, "payload": i} for i in range(count)])
                await asyncio.wait_for(handled.wait(), 60)
                # Their completions may still be on the way: the last task's answer closes the count.
                await fleet.wait_for(tasks[-1]["id"], 10)
                done: list[fleetd.Task] = []
                while len(done) < count:
                    done = (await fleet.list(type=kind, status="completed", limit=1000)).items
            finally:
                await asyncio.gather(*(a.stop() for a in agents))
            assert sorted(calls) == sorted(t["id"] for t in tasks) and set(calls.values()) == {1}
            assert all(t["attempts"] == 1 and t["result"] == t["payload"] * 2 for t in done)
            assert {t["agentId"] for t in done} == {a.id for a in agents}

    asyncio.run(main())


def metric(server: Server, name: str, **labels: str) -> float:
    """The sum of a Prometheus counter's samples whose labels include every one given."""
    with api(server) as http:
        text = http.get("/metrics").text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.parametrize("transport", ["ws", "poll"])
def test_what_finishes_together_is_reported_in_batches(server: Server, transport: str) -> None:
    kind = f"py-batch-{transport}"
    count = 60

    def reports() -> tuple[float, float]:
        if transport == "ws":
            batched = metric(server, "fleetd_agent_stream_messages_total", type="batch")
            single = metric(server, "fleetd_agent_stream_messages_total", type="complete")
        else:
            batched = metric(server, "fleetd_http_request_duration_seconds_count", route="/v1/tasks/complete")
            single = metric(server, "fleetd_http_request_duration_seconds_count", route="/v1/tasks/:id/complete")
        return batched, single

    async def main() -> None:
        async with fleet_of(server) as fleet:
            agent = fleet.agent(f"batch-{transport}", [kind], concurrency=20, transport=transport)

            @agent.task(kind)
            async def echo(task: fleetd.Task, ctx: TaskContext) -> Any:
                return {"echoed": task["payload"]}

            await fleet.submit_batch([{"type": kind, "payload": i} for i in range(count)])
            await agent.start()
            try:
                done: list[fleetd.Task] = []
                for _ in range(3000):
                    done = (await fleet.list(type=kind, status="completed", limit=1000)).items
                    if len(done) == count:
                        break
                    await asyncio.sleep(0.02)
            finally:
                await agent.stop()
            assert len(done) == count
            assert all(t["result"] == {"echoed": t["payload"]} for t in done)

    before = reports()
    asyncio.run(main())
    batched, single = (now - then for now, then in zip(reports(), before))
    assert batched >= 1, "no batch was sent"
    assert batched + single < count / 2, f"{count} tasks took {batched} batches and {single} single reports"


def test_run_returns_the_result_and_raises_on_a_dead_or_cancelled_task(server: Server) -> None:
    async def main() -> None:
        async with fleet_of(server) as fleet:
            agent = fleet.agent("runner", ["py-run"], concurrency=4)

            @agent.handler
            def handle(task: fleetd.Task, ctx: TaskContext) -> Any:
                if task["payload"] == "bad":
                    raise NonRetryableError("cannot parse bad")
                if task["payload"] == "set":
                    return {1, 2}
                return {"upper": task["payload"].upper()}

            await agent.start()
            try:
                assert await fleet.run("py-run", "hello", timeout=10) == {"upper": "HELLO"}
                with pytest.raises(fleetd.TaskFailedError) as failed:
                    await fleet.run("py-run", "bad", timeout=10)
                assert failed.value.task["status"] == "dead"
                assert failed.value.task["error"] == {"name": "NonRetryableError", "message": "cannot parse bad"}
                with pytest.raises(fleetd.TaskFailedError) as not_json:
                    await fleet.run("py-run", "set", timeout=10)
                assert not_json.value.task["error"]["name"] == "ResultNotJson" and not_json.value.task["attempts"] == 1
                # Nobody does py-nobody tasks: cancelled while it waits in the queue.
                waiting = asyncio.create_task(fleet.run("py-nobody", timeout=10))
                queued = await fleet.list(type="py-nobody")
                while not queued.items:
                    queued = await fleet.list(type="py-nobody")
                await fleet.cancel(queued.items[0]["id"])
                with pytest.raises(fleetd.TaskCancelledError):
                    await waiting
                with pytest.raises(TimeoutError):
                    await fleet.run("py-nobody", timeout=0.3)
            finally:
                await agent.stop()

    asyncio.run(main())


def test_cancel_reaches_a_running_asyncio_handler_and_a_blocking_one(server: Server) -> None:
    async def main() -> None:
        async with fleet_of(server) as fleet:
            agent = fleet.agent("cancellable", ["py-cancel-async", "py-cancel-sync"], concurrency=2)
            started: dict[str, asyncio.Event] = {"async": asyncio.Event(), "sync": asyncio.Event()}
            seen: dict[str, str | None] = {}
            loop = asyncio.get_running_loop()

            @agent.task("py-cancel-async")
            async def slow(task: fleetd.Task, ctx: TaskContext) -> str:
                started["async"].set()
                try:
                    await asyncio.sleep(60)
                except asyncio.CancelledError:
                    seen["async"] = ctx.cancel_reason
                    raise
                return "never"

            @agent.task("py-cancel-sync")
            def blocking(task: fleetd.Task, ctx: TaskContext) -> str:
                loop.call_soon_threadsafe(started["sync"].set)
                if ctx.cancelled.wait(60):
                    seen["sync"] = ctx.cancel_reason
                return "stopped early"

            await agent.start()
            try:
                for kind in ("async", "sync"):
                    # A lease of 60 s: only the cancel message on the socket can tell the agent in time.
                    task = await fleet.submit(f"py-cancel-{kind}", lease_ms=60_000)
                    await started[kind].wait()
                    await fleet.cancel(task["id"], reason="not needed any more")
                    async with asyncio.timeout(20):
                        while agent.in_flight:
                            await asyncio.sleep(0.02)
                    assert seen[kind] == "cancelled"
                    cancelled = await fleet.get(task["id"])
                    assert cancelled["status"] == "cancelled"
                    assert cancelled["error"] == {"code": "FLEETD_ERR_CANCELLED", "message": "not needed any more"}

                # A hung handler past its execution timeout is stopped the same way, and the task retried.
                task = await fleet.submit("py-cancel-async", lease_ms=300, execution_timeout_ms=1_000, max_attempts=1)
                async with asyncio.timeout(20):
                    while (await fleet.get(task["id"]))["status"] != "dead":
                        await asyncio.sleep(0.05)
                    while agent.in_flight:
                        await asyncio.sleep(0.02)
                assert seen["async"] == "timed out"
                assert (await fleet.get(task["id"]))["error"]["code"] == "FLEETD_ERR_TIMEOUT"
            finally:
                await agent.stop()

    asyncio.run(main())


def test_stop_gives_back_the_tasks_it_could_not_finish_in_time(server: Server) -> None:
    async def main() -> None:
        async with fleet_of(server) as fleet:
            agent = fleet.agent("impatient", ["py-stop"])
            started = asyncio.Event()

            @agent.task("py-stop")
            async def forever(task: fleetd.Task, ctx: TaskContext) -> None:
                started.set()
                await asyncio.sleep(60)

            await agent.start()
            task = await fleet.submit("py-stop", backoff_ms=60_000)
            try:
                await asyncio.wait_for(started.wait(), 10)
            finally:
                await agent.stop(timeout=0.1)
            back = await fleet.get(task["id"])
            assert back["status"] == "scheduled" and back["attempts"] == 1
            assert back["error"]["name"] == "AgentStopping"

    asyncio.run(main())


def test_a_long_poll_agent_started_again_takes_back_the_task_it_held(server: Server) -> None:
    async def main() -> None:
        async with fleet_of(server) as fleet:
            held, token = await fleet.register_agent("restarted-poller", ["py-held"])
            # A lease far longer than the test: the task completes in time only if the agent takes it back.
            task = await fleet.submit("py-held", lease_ms=600_000)
            claimed = await fleet.request("POST", "/v1/tasks/claim", {"agentId": held["id"], "max": 1}, credential=token)
            assert [t["id"] for t in claimed["tasks"]] == [task["id"]]
            agent = fleet.agent("restarted-poller", ["py-held"], transport="poll", agent_id=held["id"], token=token)
            runs: list[int] = []

            @agent.handler
            async def handle(t: fleetd.Task, ctx: TaskContext) -> str:
                runs.append(t["id"])
                return "resumed"

            await agent.start()
            try:
                done = await fleet.wait_for(task["id"], timeout=10)
                assert done["status"] == "completed"
                assert runs == [task["id"]]
                assert done["attempts"] == 1 and done["result"] == "resumed"
            finally:
                await agent.stop()

    asyncio.run(main())


@contextlib.asynccontextmanager
async def resumed_near_lapse(fleet: AsyncFleet, name: str, transport: str, via: AsyncFleet | None = None) -> AsyncIterator[tuple[fleetd.Task, list[BaseException]]]:
    """Yields a task and the errors of the agent that held it: the agent claimed it with a 2 s lease
    and comes back (through ``via``'s URL, when given) with less than half the lease left, and its
    handler outlasts what is left. Stops the agent on the way out."""
    held, token = await fleet.register_agent(name, [name])
    task = await fleet.submit(name, lease_ms=2_000)
    claimed = await fleet.request("POST", "/v1/tasks/claim", {"agentId": held["id"], "max": 1}, credential=token)
    assert [t["id"] for t in claimed["tasks"]] == [task["id"]]
    await asyncio.sleep(1.2)
    agent = (via or fleet).agent(name, [name], transport=transport, agent_id=held["id"], token=token)
    errors: list[BaseException] = []
    agent.on("error", errors.append)

    @agent.handler
    async def handle(t: fleetd.Task, ctx: TaskContext) -> str:
        await asyncio.sleep(1.5)
        return "in time"

    await agent.start()
    try:
        yield task, errors
    finally:
        await agent.stop()


@pytest.mark.parametrize("transport", ["poll", "ws"])
def test_an_agent_started_again_near_the_end_of_a_lease_extends_it_at_once(server: Server, transport: str) -> None:
    async def main() -> None:
        async with fleet_of(server) as fleet, resumed_near_lapse(fleet, f"py-near-lapse-{transport}", transport) as (task, errors):
            done = await fleet.wait_for(task["id"], timeout=10)
            # Neither requeued (attempt 2) nor taken away as a lost lease.
            assert done["status"] == "completed" and done["attempts"] == 1 and done["result"] == "in time"
            assert errors == []

    asyncio.run(main())


@contextlib.asynccontextmanager
async def http_proxy(
    server: Server,
    answer: Callable[[str, str], tuple[int, dict[str, Any]] | None] = lambda method, path: None,
    answered: list[tuple[str, str, int]] | None = None,
) -> AsyncIterator[str]:
    """A real HTTP/1.1 proxy in front of ``server``; yields its URL. ``answer(method, path)`` may answer a
    request itself (status, JSON body), as a server just restarted would; None passes it on. Each
    answer is noted in ``answered``, when given: the method, the path and the body's length."""
    upstream = httpx.AsyncClient(base_url=server.url, timeout=None)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
                length = int(next((v for k, v in headers.items() if k.lower() == "content-length"), "0"))
                body = await reader.readexactly(length) if length else b""
                own = answer(method, path)
                if own is not None:
                    status, content = own[0], json.dumps(own[1]).encode()
                else:
                    passed = {k: v for k, v in headers.items() if k.lower() not in ("host", "content-length", "connection")}
                    reply = await upstream.request(method, path, headers=passed, content=body)
                    status, content = reply.status_code, reply.content
                if answered is not None:
                    answered.append((method, path, len(content)))
                writer.write(f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {len(content)}\r\n\r\n".encode() + content)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    proxy = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{proxy.sockets[0].getsockname()[1]}"
    finally:
        proxy.close()
        await upstream.aclose()


def test_a_resumed_lease_whose_first_extension_fails_for_a_passing_reason_is_extended_again_shortly(server: Server) -> None:
    refused: list[str] = []

    def first_extension_unavailable(method: str, path: str) -> tuple[int, dict[str, Any]] | None:
        if method == "POST" and path.split("?")[0].endswith("/extend") and not refused:
            refused.append(path)
            return 503, {"error": {"code": "FLEETD_ERR_UNAVAILABLE", "message": "starting"}}
        return None

    async def main() -> None:
        async with fleet_of(server) as fleet, http_proxy(server, first_extension_unavailable) as url, AsyncFleet(url, api_key=server.key) as proxied:
            # The regular extension, half a lease after the refused one, would come after the lease lapsed.
            async with resumed_near_lapse(fleet, "py-resumed-extension-refused", "poll", via=proxied) as (task, errors):
                done = await fleet.wait_for(task["id"], timeout=10)
                assert len(refused) == 1, "the first extension was refused"
                assert done["status"] == "completed" and done["attempts"] == 1 and done["result"] == "in time"
                assert [getattr(e, "code", None) for e in errors] == ["FLEETD_ERR_UNAVAILABLE"]

    asyncio.run(main())


def test_over_http_a_long_payload_is_received_once_and_not_with_each_extension(server: Server) -> None:
    answered: list[tuple[str, str, int]] = []
    prompt = secrets.token_urlsafe(150_000)

    async def main() -> None:
        async with fleet_of(server) as fleet, http_proxy(server, answered=answered) as url, AsyncFleet(url, api_key=server.key) as proxied:
            agent = proxied.agent("py-long-prompt", ["py-long-prompt"], transport="poll")

            # Extended every half lease, twice at least while the handler runs; a lease of a second
            # leaves half a second for the claim's answer.
            @agent.handler
            async def handle(t: fleetd.Task, ctx: TaskContext) -> dict[str, int]:
                await asyncio.sleep(2.2)
                return {"chars": len(t["payload"]["prompt"])}

            await agent.start()
            try:
                task = await fleet.submit("py-long-prompt", {"prompt": prompt}, lease_ms=1_000)
                done = await fleet.wait_for(task["id"], timeout=15)
                assert done["status"] == "completed" and done["result"] == {"chars": len(prompt)}
            finally:
                await agent.stop()
            writes = [(path, size) for method, path, size in answered if method == "POST" and path.split("?")[0].rsplit("/", 1)[-1] in ("extend", "complete")]
            assert sum(1 for path, _ in writes if "/extend" in path) >= 2, writes
            for path, size in writes:
                assert path.endswith("?return=minimal") and size < 2_000, (path, size)
            carried = [path.split("?")[0] for _, path, size in answered if size > 100_000]
            assert carried == ["/v1/tasks/claim"], "the prompt reached the agent once, with its claim"

    asyncio.run(main())


@contextlib.asynccontextmanager
async def tcp_proxy(
    server: Server,
    on_answer: Callable[[bytes, asyncio.StreamWriter, asyncio.StreamWriter], Awaitable[bool]] | None = None,
    links: set[asyncio.StreamWriter] | None = None,
    refuse: asyncio.Event | None = None,
) -> AsyncIterator[str]:
    """A real TCP proxy in front of ``server``; yields its URL. ``on_answer`` sees each chunk the
    server sends, with the client's and the server's writers, before it is passed on: it may wait,
    and answers True when it dealt with the chunk itself and the link is to end. ``links``, when
    given, holds the writers of every connection open: closing them all cuts the network. While
    ``refuse`` is set, new connections are closed at once."""
    target = httpx.URL(server.url)
    links = set() if links is None else links

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, other: asyncio.StreamWriter, to_client: bool) -> None:
        try:
            while chunk := await reader.read(65536):
                if to_client and on_answer is not None and await on_answer(chunk, writer, other):
                    return
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def link(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if refuse is not None and refuse.is_set():
            client_writer.close()
            return
        server_reader, server_writer = await asyncio.open_connection(target.host, target.port)
        links.update((client_writer, server_writer))
        await asyncio.gather(pipe(client_reader, server_writer, client_writer, False), pipe(server_reader, client_writer, server_writer, True))

    proxy = await asyncio.start_server(link, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{proxy.sockets[0].getsockname()[1]}"
    finally:
        proxy.close()
        for writer in links:
            writer.close()
        await proxy.wait_closed()


def test_a_reconnected_agent_extends_at_once_the_lease_of_a_task_it_is_still_running(server: Server) -> None:
    async def main() -> None:
        links: set[asyncio.StreamWriter] = set()
        async with tcp_proxy(server, links=links) as proxy_url, fleet_of(server) as fleet, AsyncFleet(proxy_url, api_key=server.key) as through_proxy:
            agent = through_proxy.agent("py-cut-off", ["py-cut-off"], transport="ws", reconnect=(0.02, 0.1))
            connections: list[str] = []
            agent.on("connected", connections.append)
            started = asyncio.Event()
            release = asyncio.Event()

            @agent.handler
            async def handle(t: fleetd.Task, ctx: TaskContext) -> str:
                started.set()
                await release.wait()
                return "after the cut"

            await agent.start()
            try:
                # A long lease: its extensions are due every 30 s, far beyond this test. The extensions
                # that would have fallen in a cut are what the agent makes up for when its socket is back.
                task = await fleet.submit("py-cut-off", lease_ms=60_000)
                await asyncio.wait_for(started.wait(), 10)
                before = (await fleet.get(task["id"]))["leaseExpiresAt"]
                await asyncio.sleep(0.05)  # so that an extension moves the expiry to a later millisecond
                for writer in list(links):
                    writer.close()

                async def reconnected() -> bool:
                    return len(connections) >= 2

                async def extended() -> bool:
                    return (await fleet.get(task["id"]))["leaseExpiresAt"] > before

                await until(reconnected, "the agent to reconnect")
                await until(extended, "the lease extended after the reconnect", timeout=5)
                release.set()
                done = await fleet.wait_for(task["id"], timeout=10)
                assert done["status"] == "completed" and done["attempts"] == 1 and done["result"] == "after the cut"
            finally:
                release.set()
                await agent.stop()

    asyncio.run(main())


def test_a_task_that_came_back_while_its_first_run_still_went_on_runs_afresh(server: Server) -> None:
    async def main() -> None:
        # Cut off past the server's grace, the agent goes offline and its task back to the queue; when
        # it is back, the task (attempt 2) is pushed to it again while its first run still goes on.
        links: set[asyncio.StreamWriter] = set()
        refuse = asyncio.Event()
        async with tcp_proxy(server, links=links, refuse=refuse) as proxy_url, fleet_of(server) as fleet, AsyncFleet(proxy_url, api_key=server.key) as through_proxy:
            agent = through_proxy.agent("py-came-back", ["py-came-back"], concurrency=2, transport="ws", reconnect=(0.02, 0.1))
            runs: list[int] = []
            first_started = asyncio.Event()
            release_first = asyncio.Event()

            @agent.handler
            async def handle(t: fleetd.Task, ctx: TaskContext) -> str:
                runs.append(t["attempts"])
                if t["attempts"] > 1:
                    return f"attempt {t['attempts']}"
                first_started.set()
                await release_first.wait()
                return "attempt 1, late"

            await agent.start()
            try:
                task = await fleet.submit("py-came-back", lease_ms=60_000)
                await asyncio.wait_for(first_started.wait(), 10)
                refuse.set()
                for writer in list(links):
                    writer.close()
                await reaches(fleet, task["id"], "queued")
                refuse.clear()
                done = await fleet.wait_for(task["id"], timeout=10)
                assert done["status"] == "completed" and done["attempts"] == 2 and done["result"] == "attempt 2"
                assert runs == [1, 2]
            finally:
                release_first.set()
                await agent.stop()

    asyncio.run(main())


@contextlib.asynccontextmanager
async def answers_held_back(server: Server) -> AsyncIterator[tuple[str, asyncio.Event]]:
    """A proxy (tcp_proxy) and an event: while the event is clear, what the server sends waits in the
    proxy (the clients' bytes still go through); set, it flows again, in order."""
    flowing = asyncio.Event()
    flowing.set()

    async def hold(chunk: bytes, writer: asyncio.StreamWriter, other: asyncio.StreamWriter) -> bool:
        await flowing.wait()
        return False

    try:
        async with tcp_proxy(server, hold) as url:
            yield url, flowing
    finally:
        flowing.set()


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 10) -> None:
    """Polls ``check`` until it is true; fails, naming what it waited for, after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def reaches(fleet: AsyncFleet, id: int, status: str, attempts: int = 1) -> fleetd.Task:
    """The task once it has that status and attempt (polled through the API)."""
    for _ in range(500):
        task = await fleet.get(id)
        if task["status"] == status and task["attempts"] == attempts:
            return task
        await asyncio.sleep(0.02)
    raise AssertionError(f"task {id} never {status} at attempt {attempts}")


def test_a_long_poll_agent_whose_claim_loses_its_answer_takes_the_task_back_at_once(server: Server) -> None:
    async def main() -> None:
        # A real TCP proxy that cuts the first answer to carry a task in the middle, as a network does.
        cut = asyncio.Event()

        async def cut_first_task(chunk: bytes, writer: asyncio.StreamWriter, other: asyncio.StreamWriter) -> bool:
            if cut.is_set() or b'"tasks":[{' not in chunk:
                return False
            cut.set()
            writer.write(chunk[: len(chunk) // 2])
            await writer.drain()
            writer.close()
            other.close()
            return True

        async with tcp_proxy(server, cut_first_task) as proxy_url, fleet_of(server) as fleet, AsyncFleet(proxy_url, api_key=server.key) as through_proxy:
            agent = through_proxy.agent("poll-through-proxy", ["py-cut-poll"], transport="poll")
            errors: list[BaseException] = []
            agent.on("error", errors.append)
            runs: list[int] = []

            @agent.handler
            async def handle(t: fleetd.Task, ctx: TaskContext) -> str:
                runs.append(t["id"])
                return "ok"

            await agent.start()
            try:
                # A lease far longer than the test: the task completes in time only if the agent takes it back.
                task = await fleet.submit("py-cut-poll", lease_ms=600_000)
                done = await fleet.wait_for(task["id"], timeout=15)
                assert cut.is_set()
                assert done["status"] == "completed" and done["attempts"] == 1 and done["agentId"] == agent.id
                assert runs == [task["id"]]
                assert errors == []
            finally:
                await agent.stop()

    asyncio.run(main())


def test_a_finished_handler_gives_its_slot_back_with_the_completion_before_the_answer(server: Server) -> None:
    # The server's answers are held back once the first task has arrived: the agent never hears its
    # completion acknowledged, yet its credit went with the completion, so the server leases it the
    # next task at once (an agent that waited for the answer, never).
    async def main() -> None:
        async with answers_held_back(server) as (url, flowing), fleet_of(server) as fleet, AsyncFleet(url, api_key=server.key) as through_proxy:
            agent = through_proxy.agent("one-trip", ["py-one-trip"], concurrency=1, transport="ws")

            @agent.handler
            async def handle(t: fleetd.Task, ctx: TaskContext) -> str:
                flowing.clear()
                return "done"

            await agent.start()
            try:
                first = await fleet.submit("py-one-trip")
                await reaches(fleet, first["id"], "completed")
                second = await fleet.submit("py-one-trip")
                assert (await reaches(fleet, second["id"], "leased"))["agentId"] == agent.id
                flowing.set()
                await reaches(fleet, second["id"], "completed")
            finally:
                flowing.set()
                await agent.stop()

    asyncio.run(main())


def test_a_task_handed_straight_back_while_its_failure_is_unanswered_runs_again(tmp_path) -> None:
    # No backoff: a failed task is queued again at once. The only agent, at concurrency 1, sent its
    # slot's credit with the failure, so the task comes back as a new lease of the same id. The
    # server's answers are held until it has: the failure's answer and the new lease then arrive
    # together, and the task must run again, not pass for the run that failed (whose lease, a
    # minute long here, would then hold it idle).
    eager = start_fleetd(str(tmp_path), {"FLEETD_TASK_BACKOFF_MS": "0"})
    attempts: list[int] = []

    async def main() -> None:
        async with answers_held_back(eager) as (url, flowing), fleet_of(eager) as fleet, AsyncFleet(url, api_key=eager.key) as through_proxy:
            agent = through_proxy.agent("retrier", ["py-retry"], concurrency=1, transport="ws")

            @agent.handler
            async def handle(t: fleetd.Task, ctx: TaskContext) -> str:
                attempts.append(t["attempts"])
                if len(attempts) == 1:
                    flowing.clear()
                    raise RuntimeError("not yet")
                return "done"

            await agent.start()
            try:
                task = await fleet.submit("py-retry", lease_ms=60_000, max_attempts=5)
                await reaches(fleet, task["id"], "leased", attempts=2)
                flowing.set()
                done = await fleet.wait_for(task["id"], 10)
                assert done["status"] == "completed" and done["result"] == "done"
            finally:
                flowing.set()
                await agent.stop()

    try:
        asyncio.run(main())
    finally:
        stop(eager.process)
    assert attempts == [1, 2]


def test_an_agent_killed_mid_task_loses_it_to_another_agent(server: Server, processes: Processes) -> None:
    with Fleet(server.url, api_key=server.key) as fleet:
        doomed = processes.demo_agent(server, "--capabilities", "sleep", "--concurrency", "1", "--name", "doomed")
        task = fleet.submit("sleep", {"ms": 60_000}, lease_ms=30_000)
        leased = eventually(lambda: (t := fleet.get(task["id"]))["status"] == "leased" and t, 20, "the task leased")
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()

        # Another agent, in this process: the killed one's lease comes back after the disconnect grace.
        rescuer = fleet.agent("rescuer", ["sleep"])
        rescuer.task("sleep")(lambda task, ctx: "done by the rescuer")
        worker = threading.Thread(target=rescuer.run, daemon=True)
        worker.start()
        try:
            done = fleet.wait_for(task["id"], 20)
        finally:
            rescuer.stop()
            worker.join(10)
        assert done["status"] == "completed" and done["result"] == "done by the rescuer"
        assert done["attempts"] == 2 and done["agentId"] != leased["agentId"]
        assert not worker.is_alive()


def test_sigterm_finishes_the_task_in_hand_then_exits(server: Server, processes: Processes) -> None:
    with Fleet(server.url, api_key=server.key) as fleet:
        agent = processes.demo_agent(server, "--capabilities", "sleep", "--concurrency", "2", "--name", "graceful")
        task = fleet.submit("sleep", {"ms": 1500})
        eventually(lambda: fleet.get(task["id"])["status"] == "leased", 20, "the task leased")
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(20) == 0
        done = fleet.get(task["id"])
        assert done["status"] == "completed" and done["result"] == {"slept": 1500} and done["attempts"] == 1
        assert agent.stdout is not None and "stopped" in agent.stdout.read()


def test_an_agent_waits_for_its_nodes_and_fails_over_from_a_dead_one(server: Server) -> None:
    async def main() -> None:
        async with AsyncFleet(urls=["http://127.0.0.1:9", server.url], api_key=server.key) as fleet:
            agent = fleet.agent("failover", ["py-failover-agent"], reconnect=(0.02, 0.2))
            agent.handler(lambda task, ctx: "from the live node")
            await agent.start()
            try:
                assert await fleet.run("py-failover-agent", timeout=10) == "from the live node"
            finally:
                await agent.stop()

    asyncio.run(main())


def test_an_agent_started_before_its_server_waits_for_it_saying_so(tmp_path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    said: list[str] = []

    async def main() -> None:
        late: Server | None = None
        async with AsyncFleet(f"http://127.0.0.1:{port}", api_key=key) as fleet:
            agent = fleet.agent("early", ["py-early"], reconnect=(0.02, 0.2))
            retrying = asyncio.Event()

            def on_error(err: Exception) -> None:
                said.append(str(err))
                retrying.set()

            agent.on("error", on_error)
            agent.handler(lambda task, ctx: "late but done")
            starting = asyncio.create_task(agent.start())
            try:
                await retrying.wait()
                late = await asyncio.to_thread(start_fleetd, str(tmp_path), {"FLEETD_ADMIN_KEY": key}, port)
                await starting
                assert await fleet.run("py-early", timeout=10) == "late but done"
            finally:
                starting.cancel()
                await agent.stop()
                if late:
                    await asyncio.to_thread(stop, late.process)

    key = f"fk_{secrets.token_urlsafe(32)}"
    asyncio.run(main())
    assert re.search(r"cannot reach http://127\.0\.0\.1:\d+ .*; retrying in \d+\.\d s", said[0]), said[0]


def test_subscribe_delivers_the_events_of_its_topics(server: Server) -> None:
    async def main() -> None:
        async with fleet_of(server) as fleet:
            subscription = await fleet.subscribe(["queue:py-events"])
            task = await fleet.submit("py-events", delay_ms=60_000)
            await fleet.cancel(task["id"])
            names = []
            async for event in subscription:
                assert event.topic == "queue:py-events" and event.data["task"]["id"] == task["id"]
                names.append(event.name)
                if event.name == "task.cancelled":
                    subscription.close()
            assert names == ["task.created", "task.cancelled"]

    asyncio.run(main())


def test_a_typescript_agent_and_a_python_agent_share_one_queue(server: Server, processes: Processes) -> None:
    kind = "echo"
    with Fleet(server.url, api_key=server.key) as fleet:
        # The TypeScript SDK's demo agent (`npx fleetd agent`) beside a Python one, both on `echo`.
        typescript = processes.spawn([NODE, str(ROOT / "dist" / "cli" / "main.js"), "agent", "--url", server.url, "--api-key", server.key, "--capabilities", kind, "--concurrency", "4", "--name", "mixed-ts"])
        python = fleet.agent("mixed-py", [kind], concurrency=4)
        python_connected = threading.Event()
        python.on("connected", lambda transport: python_connected.set())

        @python.task(kind)
        async def echo(task: fleetd.Task, ctx: TaskContext) -> Any:
            await asyncio.sleep(0.002)
            return task["payload"]

        worker = threading.Thread(target=python.run, daemon=True)
        worker.start()
        try:
            assert typescript.stdout is not None
            # Killed if it has not said so in 30 s: the read of its output then ends instead of hanging.
            watchdog = threading.Timer(30, typescript.kill)
            watchdog.start()
            try:
                connected = any("connected to" in line for line in typescript.stdout)
            finally:
                watchdog.cancel()
            assert connected, "the TypeScript agent never said it connected"
            assert python_connected.wait(20)
            threading.Thread(target=typescript.stdout.read, daemon=True).start()
            tasks = fleet.submit_batch([{"type": kind, "payload": {"n": i}} for i in range(200)])
            done = [fleet.wait_for(t["id"], 30) for t in tasks]
        finally:
            python.stop()
            worker.join(10)
            typescript.terminate()
        assert all(t["status"] == "completed" and t["attempts"] == 1 and t["result"] == t["payload"] for t in done)
        by_agent = Counter(t["agentId"] for t in done)
        assert len(by_agent) == 2, by_agent


@pytest.mark.parametrize("transport", ["ws", "poll"])
def test_an_agent_reports_usage_and_releases_a_task_without_spending_an_attempt(server: Server, transport: str) -> None:
    kind = f"py-release-{transport}"
    released_over_ws = metric(server, "fleetd_agent_stream_messages_total", type="release")
    released_over_http = metric(server, "fleetd_http_request_duration_seconds_count", route="/v1/tasks/:id/release", status_code="200")

    async def main() -> None:
        async with fleet_of(server) as fleet:
            agent = fleet.agent(f"releaser-{transport}", [kind], transport=transport)
            calls: list[int] = []

            @agent.task(kind)
            async def call_llm(task: fleetd.Task, ctx: TaskContext) -> Any:
                calls.append(ctx.attempt)
                ctx.usage(input_tokens=10, model="model-x")
                if len(calls) == 1:
                    ctx.release(0, "provider answered 429")
                if len(calls) == 2:
                    raise fleetd.RetryLaterError(0, "provider answered 429 again")
                with pytest.raises(ValueError):
                    ctx.usage(output_tokens=-1)
                with pytest.raises(ValueError):
                    ctx.usage(input_tokens=1.5)
                with pytest.raises(ValueError):
                    ctx.release(-1)
                ctx.usage(output_tokens=5, cost_usd=0.25)
                ctx.usage(output_tokens=2)
                return "done"

            await agent.start()
            try:
                # maxAttempts 1: a failure would dead-letter the task at once; a release must not.
                task = await fleet.submit(kind, concurrency_key="tenant-a", max_attempts=1)
                done = await fleet.wait_for(task["id"], 30)
            finally:
                await agent.stop()
            assert done["status"] == "completed" and done["result"] == "done"
            assert done["attempts"] == 1, "two releases spent no attempt"
            assert calls == [1, 1, 1]

    asyncio.run(main())
    with api(server) as http:
        usage = http.get(f"/v1/types/{kind}").json()["usage"]
    assert usage["day"] == {"inputTokens": 30, "outputTokens": 7, "costUsd": 0.25, "reports": 3}
    assert [k["key"] for k in usage["keys"]] == ["tenant-a"]
    over_ws = metric(server, "fleetd_agent_stream_messages_total", type="release") - released_over_ws
    over_http = metric(server, "fleetd_http_request_duration_seconds_count", route="/v1/tasks/:id/release", status_code="200") - released_over_http
    assert (over_ws, over_http) == ((2, 0) if transport == "ws" else (0, 2))


def test_an_agent_takes_new_tasks_after_reconnecting_when_a_handler_finished_while_no_server_answered(tmp_path) -> None:
    # The handler ends while the server is down: the credit its slot gives back reaches nobody, and
    # its completion is retried, further apart each time. The welcome of the server started again
    # comes before the completion's next try, and must grant the slot all the same.
    key = f"fk_{secrets.token_urlsafe(32)}"
    servers = [start_fleetd(str(tmp_path), {"FLEETD_ADMIN_KEY": key})]
    port = int(servers[0].url.rsplit(":", 1)[1])

    async def main() -> None:
        async with AsyncFleet(servers[0].url, api_key=key) as fleet:
            agent = fleet.agent("credit", ["py-credit"], concurrency=1, transport="ws", reconnect=(0.02, 0.1))
            agent.on("error", lambda err: None)
            started = asyncio.Event()
            release = asyncio.Event()

            @agent.handler
            async def handle(t: fleetd.Task, ctx: TaskContext) -> str:
                if t["payload"] == "first":
                    started.set()
                    await release.wait()
                return f"done {t['payload']}"

            await agent.start()
            try:
                first = await fleet.submit("py-credit", "first", lease_ms=60_000)
                await asyncio.wait_for(started.wait(), 10)
                await asyncio.to_thread(stop, servers[0].process)
                release.set()
                await asyncio.sleep(2)
                servers.append(await asyncio.to_thread(start_fleetd, str(tmp_path), {"FLEETD_ADMIN_KEY": key}, port))
                second = await fleet.submit("py-credit", "second")
                done = await fleet.wait_for(second["id"], 15)
                assert done["status"] == "completed" and done["result"] == "done second"
                assert (await fleet.get(first["id"]))["result"] == "done first"
            finally:
                release.set()
                await agent.stop()

    try:
        asyncio.run(main())
    finally:
        for server in servers:
            stop(server.process)
