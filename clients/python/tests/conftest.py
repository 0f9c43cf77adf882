"""A real fleetd for the tests: the compiled server (`npm run build`), in its own process, on a
port the OS picks, with a data folder of its own; stopped and deleted at the end."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[3]
PYTHON_ROOT = Path(__file__).resolve().parents[1]
FLEETD = ROOT / "dist" / "cli" / "main.js"
NODE = os.environ.get("FLEETD_NODE", shutil.which("node") or "node")


@dataclass
class Server:
    url: str
    key: str
    process: subprocess.Popen[str]


def start_fleetd(data_dir: str, env: dict[str, str] | None = None, port: int = 0) -> Server:
    if not FLEETD.exists():
        raise RuntimeError(f"{FLEETD} is missing: run npm run build first")
    key = (env or {}).get("FLEETD_ADMIN_KEY") or f"fk_{secrets.token_urlsafe(32)}"
    process = subprocess.Popen(
        [NODE, str(FLEETD), "start", "--port", str(port), "--host", "127.0.0.1", "--data-dir", data_dir],
        env={**os.environ, "FLEETD_LOG_LEVEL": "info", "FLEETD_ADMIN_KEY": key, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    # A server that never says it listens is killed, so that the read below ends instead of hanging.
    watchdog = threading.Timer(60, process.kill)
    watchdog.start()
    try:
        for line in process.stdout:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("msg") == "fleetd is listening":
                # Keep draining the pipe so that a chatty server never blocks on a full buffer.
                threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()  # type: ignore[union-attr]
                return Server(entry["url"], key, process)
    finally:
        watchdog.cancel()
    raise RuntimeError(f"fleetd exited with {process.wait()} before listening (killed if it took 60 s)")


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    data_dir = tempfile.mkdtemp(prefix="fleetd-py-")
    # A short grace, so that the leases of a killed agent come back in a fraction of a second.
    fleetd = start_fleetd(data_dir, {"FLEETD_AGENT_DISCONNECT_GRACE_MS": "300", "FLEETD_TASK_BACKOFF_MS": "10"})
    try:
        yield fleetd
    finally:
        stop(fleetd.process)
        shutil.rmtree(data_dir, ignore_errors=True)


class Processes:
    """Processes a test starts; every one still running is killed when the test ends."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[str]] = []

    def demo_agent(self, server: Server, *args: str) -> subprocess.Popen[str]:
        """`python3 -m fleetd.agent`, the demo agent, from this checkout."""
        process = subprocess.Popen(
            [sys.executable, "-m", "fleetd.agent", "--url", server.url, "--api-key", server.key, *args],
            cwd=PYTHON_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.started.append(process)
        return process

    def spawn(self, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        process = subprocess.Popen(argv, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.started.append(process)
        return process


@pytest.fixture
def processes() -> Iterator[Processes]:
    running = Processes()
    try:
        yield running
    finally:
        for process in running.started:
            if process.poll() is None:
                process.kill()
            process.wait()


def eventually(check, timeout: float = 10.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Polls the public API until ``check()`` is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def api(server: Server) -> httpx.Client:
    """A plain HTTP client, for what a test checks beside the SDK."""
    return httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {server.key}"})
