"""Clients made for a namespace (``namespace=``), against a real fleetd: keys of team-a and team-b,
and the ``*`` admin key with a client per namespace."""
from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

import fleetd
from fleetd import AsyncFleet, Fleet, NotFoundError, TaskContext

from .conftest import Server, api


@pytest.fixture(scope="module")
def keys(server: Server) -> dict[str, str]:
    """A submit key scoped to each of team-a and team-b."""
    made = {}
    with api(server) as http:
        for namespace in ("team-a", "team-b"):
            res = http.post("/v1/keys", json={"name": f"py {namespace}", "scope": "submit", "namespaces": [namespace]})
            assert res.status_code == 201, res.text
            made[namespace] = res.json()["secret"]
    return made


def test_clients_submit_to_and_read_their_namespace(server: Server, keys: dict[str, str]) -> None:
    with (
        Fleet(server.url, api_key=server.key, namespace="team-a") as admin_a,
        Fleet(server.url, api_key=keys["team-b"]) as team_b,
        Fleet(server.url, api_key=server.key) as admin,
    ):
        assert admin_a.namespace == "team-a" and team_b.namespace is None
        assert admin_a.submit("py-ns-submit")["namespace"] == "team-a"
        assert [t["namespace"] for t in team_b.submit_batch([{"type": "py-ns-submit"}, {"type": "py-ns-submit"}])] == ["team-b", "team-b"]
        assert admin.submit("py-ns-submit")["namespace"] == "default"

        def namespaces(client: Fleet) -> list[str]:
            return sorted(t["namespace"] for t in client.list(type="py-ns-submit", limit=100).items)

        assert namespaces(admin_a) == ["team-a"]
        assert namespaces(team_b) == ["team-b", "team-b"]
        # A client that names none reads every namespace its key reaches.
        assert namespaces(admin) == ["default", "team-a", "team-b", "team-b"]


def test_agents_receive_only_their_namespaces_tasks(server: Server, keys: dict[str, str]) -> None:
    kind = "py-ns-work"

    async def main() -> None:
        async with (
            AsyncFleet(server.url, api_key=server.key, namespace="team-a") as admin_a,
            AsyncFleet(server.url, api_key=keys["team-a"]) as team_a,
            AsyncFleet(server.url, api_key=keys["team-b"]) as team_b,
            AsyncFleet(server.url, api_key=server.key) as admin,
        ):
            # Both transports: the agent stream's upgrade and long-poll's claims carry the namespace alike.
            makers = {"team-a": (admin_a, "ws"), "team-b": (team_b, "poll"), "default": (admin, "ws")}
            seen: dict[str, list[fleetd.Task]] = {}
            agents = {}
            for namespace, (client, transport) in makers.items():
                agent = client.agent(f"py-ns-{namespace}", [kind], concurrency=4, transport=transport)
                seen[namespace] = []

                def handler(got: list[fleetd.Task], name: str) -> Any:
                    async def handle(task: fleetd.Task, ctx: TaskContext) -> str:
                        got.append(task)
                        return name

                    return handle

                agent.task(kind)(handler(seen[namespace], namespace))
                agents[namespace] = agent
            try:
                for agent in agents.values():
                    await agent.start()
                for namespace, agent in agents.items():
                    assert (await admin.request("GET", f"/v1/agents/{agent.id}"))["namespace"] == namespace

                submitted: dict[str, list[int]] = {name: [] for name in agents}
                # Interleaved, so that every agent is free (and asking) while other namespaces' tasks wait.
                for i in range(10):
                    submitted["team-a"].append((await team_a.submit(kind, i))["id"])
                    submitted["team-b"].append((await team_b.submit(kind, i))["id"])
                    submitted["default"].append((await admin.submit(kind, i))["id"])
                for ids in submitted.values():
                    for id in ids:
                        assert (await admin.wait_for(id, 20))["status"] == "completed"
            finally:
                await asyncio.gather(*(agent.stop() for agent in agents.values()))

            for namespace, got in seen.items():
                assert sorted(t["id"] for t in got) == submitted[namespace], f"the {namespace} agent did its namespace's tasks, and only them"
                assert {t["namespace"] for t in got} == {namespace}
            done = (await team_b.list(type=kind, status="completed", limit=100)).items
            assert len(done) == 10 and all(t["result"] == "team-b" and t["agentId"] == agents["team-b"].id for t in done)

    asyncio.run(main())


def test_a_subscription_is_told_only_of_its_namespaces_tasks(server: Server, keys: dict[str, str]) -> None:
    kind = "py-ns-events"

    async def created(subscription: fleetd.Subscription, until: int) -> list[tuple[int, str]]:
        """The created tasks of ``kind`` the subscription tells of, up to the one numbered ``until``."""
        got: list[tuple[int, str]] = []
        async for event in subscription:
            task = event.data["task"]
            if event.name == "task.created" and task["type"] == kind:
                got.append((task["id"], task["namespace"]))
                if task["id"] == until:
                    break
        return got

    async def main() -> None:
        async with (
            AsyncFleet(server.url, api_key=server.key, namespace="team-a") as admin_a,
            AsyncFleet(server.url, api_key=keys["team-b"]) as team_b,
            AsyncFleet(server.url, api_key=server.key) as admin,
        ):
            subscriptions = [await client.subscribe(["tasks"]) for client in (admin_a, team_b, admin)]
            try:
                b1 = (await team_b.submit(kind))["id"]
                a1 = (await admin_a.submit(kind))["id"]
                b2 = (await team_b.submit(kind))["id"]
                # Events come in order: once a subscription has the last one of its namespace, any other it were sent would be in too.
                heard_a, heard_b, heard_all = await asyncio.wait_for(asyncio.gather(*(created(s, until) for s, until in zip(subscriptions, (a1, b2, b2)))), 10)
            finally:
                for subscription in subscriptions:
                    subscription.close()
            assert heard_a == [(a1, "team-a")]
            assert heard_b == [(b1, "team-b"), (b2, "team-b")]
            assert [id for id, _ in heard_all] == [b1, a1, b2]

    asyncio.run(main())


def test_a_task_of_another_namespace_is_not_found_as_a_missing_one(server: Server, keys: dict[str, str]) -> None:
    with (
        Fleet(server.url, api_key=keys["team-b"]) as team_b,
        Fleet(server.url, api_key=keys["team-a"]) as team_a,
        Fleet(server.url, api_key=server.key, namespace="team-a") as admin_a,
        Fleet(server.url, api_key=server.key) as admin,
    ):
        theirs = team_b.submit("py-ns-hidden")
        with pytest.raises(NotFoundError) as missing:
            admin_a.get(999_999_999)
        for client in (team_a, admin_a):
            for call in (lambda: client.get(theirs["id"]), lambda: client.cancel(theirs["id"]), lambda: client.wait_for(theirs["id"], 1)):
                with pytest.raises(NotFoundError) as hidden:
                    call()
                assert hidden.value.status == 404 and hidden.value.code == "FLEETD_ERR_NOT_FOUND"
                assert hidden.value.message == missing.value.message.replace("999999999", str(theirs["id"]))
        assert team_b.get(theirs["id"])["status"] == "queued"
        assert admin.get(theirs["id"])["namespace"] == "team-b"

        # A namespace the key does not reach is a 404 too, on the first request.
        with Fleet(server.url, api_key=keys["team-a"], namespace="team-b") as out_of_reach:
            with pytest.raises(NotFoundError):
                out_of_reach.submit("py-ns-reach")
        assert admin.list(type="py-ns-reach").items == []


@pytest.mark.parametrize("namespace", ["", "Team-A", "team a", "-team", "*", "a/b", "x" * 64, "é"])
def test_a_bad_namespace_is_refused_when_the_client_is_made(server: Server, namespace: str) -> None:
    for make in (Fleet, AsyncFleet):
        with pytest.raises(ValueError, match="namespace") as refused:
            make(server.url, api_key=server.key, namespace=namespace)
        assert repr(namespace) in str(refused.value)


def test_the_namespace_header_goes_on_every_request_and_socket() -> None:
    """What arrives at a bare HTTP server that answers registration and refuses every WebSocket (401)."""
    seen: list[tuple[str, dict[str, str]]] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        method, target, _ = head[0].split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in head[1:] if ":" in line)}
        upgrade = headers.get("upgrade", "").lower() == "websocket"
        seen.append((f"{'UPGRADE' if upgrade else method} {target.split('?')[0]}", headers))
        await reader.readexactly(int(headers.get("content-length", "0")))
        if upgrade:
            writer.write(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        else:
            body = json.dumps({"agent": {"id": "agt_ns"}, "token": "agent-token"}).encode()
            writer.write(b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    def first(path: str) -> dict[str, str]:
        return next(headers for p, headers in seen if p == path)

    async def main() -> None:
        bare = await asyncio.start_server(answer, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{bare.sockets[0].getsockname()[1]}"
        try:
            async with AsyncFleet(url, api_key="the-key", namespace="team-a", retries=0) as fleet:
                await fleet.register_agent("a", ["x"])
                agent = fleet.agent("a", ["x"], transport="ws")
                with pytest.raises(fleetd.UnauthorizedError):
                    await agent.start()
                subscribing = asyncio.ensure_future(fleet.subscribe(["tasks"]))
                try:
                    for _ in range(500):
                        if any(p == "UPGRADE /v1/events" for p, _ in seen):
                            break
                        await asyncio.sleep(0.01)
                finally:
                    subscribing.cancel()
        finally:
            bare.close()
            await bare.wait_closed()

    asyncio.run(main())
    for path, credential in (("POST /v1/agents", "the-key"), ("UPGRADE /v1/agents/agt_ns/stream", "agent-token"), ("UPGRADE /v1/events", "the-key")):
        assert first(path)["fleetd-namespace"] == "team-a", path
        assert first(path)["authorization"] == f"Bearer {credential}", path
