"""The Python SDK against a fleetd serving HTTPS and WSS itself (--tls-cert, --tls-key), with a
self-signed certificate that openssl makes here: trusted through ``ca_bundle``, refused without."""
from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import fleetd
from fleetd import AsyncFleet, Fleet, TaskContext

from .conftest import Server, start_fleetd, stop


@pytest.fixture(scope="module")
def tls_server() -> Iterator[tuple[Server, str]]:
    folder = Path(tempfile.mkdtemp(prefix="fleetd-py-tls-"))
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True,
        capture_output=True,
    )
    server = start_fleetd(str(folder / "data"), {"FLEETD_TLS_CERT": str(cert), "FLEETD_TLS_KEY": str(key)})
    try:
        yield server, str(cert)
    finally:
        stop(server.process)
        shutil.rmtree(folder, ignore_errors=True)


def test_requests_go_over_https_with_the_ca_bundle_and_are_refused_without(tls_server: tuple[Server, str]) -> None:
    server, cert = tls_server
    assert server.url.startswith("https://127.0.0.1:")
    with Fleet(server.url, api_key=server.key, ca_bundle=cert) as fleet:
        task = fleet.submit("py-tls", {"secure": True})
        assert fleet.get(task["id"])["payload"] == {"secure": True}
    with Fleet(server.url, api_key=server.key, retries=0) as untrusting:
        with pytest.raises(Exception) as refused:
            untrusting.stats()
        assert "CERTIFICATE_VERIFY_FAILED" in repr(refused.value) + repr(refused.value.__cause__) + repr(refused.value.__context__)


def test_an_agent_works_by_wss_push_and_events_arrive_by_wss(tls_server: tuple[Server, str]) -> None:
    server, cert = tls_server

    async def main() -> None:
        async with AsyncFleet(server.url, api_key=server.key, ca_bundle=cert) as fleet:
            subscription = await fleet.subscribe(["queue:py-tls-echo"])
            agent = fleet.agent("tls-agent", ["py-tls-echo"], transport="ws")
            transports: list[str] = []
            agent.on("connected", transports.append)

            @agent.task("py-tls-echo")
            async def echo(task: fleetd.Task, ctx: TaskContext) -> object:
                return {"echoed": task["payload"]}

            await agent.start()
            try:
                assert await fleet.run("py-tls-echo", {"over": "wss"}, timeout=20) == {"echoed": {"over": "wss"}}
                assert transports == ["ws"]
                # The stream is over WSS: its first event is the task's creation.
                first = await asyncio.wait_for(subscription.__aiter__().__anext__(), 15)
                subscription.close()
                assert first.name == "task.created" and first.topic == "queue:py-tls-echo"
            finally:
                await agent.stop()

    # Bounded: a socket that never connects must fail the test, not hang the suite.
    asyncio.run(asyncio.wait_for(main(), 60))
