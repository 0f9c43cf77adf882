"""``python3 -m fleetd.agent``: a demo agent, as ``npx fleetd agent`` is for the TypeScript SDK.

  echo   completes with its payload
  sleep  waits payload.ms (default 1000) milliseconds, then completes; a cancel ends it early
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import datetime, timezone
from typing import Any

from fleetd import Fleet, NonRetryableError, Task, TaskContext


def say(line: str) -> None:
    print(f"{datetime.now(timezone.utc).isoformat(timespec='milliseconds')} {line}", flush=True)


async def echo(task: Task, ctx: TaskContext) -> Any:
    return task["payload"]


async def sleep(task: Task, ctx: TaskContext) -> Any:
    payload = task["payload"] if isinstance(task["payload"], dict) else {}
    ms = payload.get("ms", 1000)
    if not isinstance(ms, (int, float)) or ms < 0:
        raise NonRetryableError(f"payload.ms must be a number of milliseconds, not {ms!r}")
    await asyncio.sleep(ms / 1000)
    return {"slept": ms}


HANDLERS = {"echo": echo, "sleep": sleep}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python3 -m fleetd.agent", description="Runs a demo agent against a fleetd server.")
    parser.add_argument("--url", default=os.environ.get("FLEETD_URL", "http://localhost:7070"), help="the server, or several separated by commas (FLEETD_URL)")
    parser.add_argument("--api-key", default=os.environ.get("FLEETD_API_KEY"), help="a key of submit scope or more, to register (FLEETD_API_KEY)")
    parser.add_argument("--capabilities", default="echo,sleep")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--name", default=f"demo-py-{os.getpid()}")
    parser.add_argument("--transport", choices=["auto", "ws", "poll"], default="auto")
    parser.add_argument("--namespace", default=os.environ.get("FLEETD_NAMESPACE"), help="the namespace to register in (FLEETD_NAMESPACE); by default the key's only one, or default")
    args = parser.parse_args(argv)
    capabilities = [c.strip() for c in args.capabilities.split(",") if c.strip()]
    unknown = [c for c in capabilities if c not in HANDLERS]
    if unknown:
        parser.error(f"--capabilities: the demo agent has no handler for {', '.join(unknown)} (it knows {', '.join(HANDLERS)})")
    if args.concurrency < 1:
        parser.error("--concurrency: must be at least 1")

    try:
        fleet = Fleet(urls=args.url.split(","), api_key=args.api_key, namespace=args.namespace)
    except ValueError as err:
        parser.error(f"--namespace: {err}")
    agent = fleet.agent(args.name, capabilities, args.concurrency, transport=args.transport)
    for capability in capabilities:
        agent.task(capability)(HANDLERS[capability])
    agent.on("connected", lambda transport: say(f"connected to {args.url} ({transport}) as {agent.id}, capabilities {','.join(capabilities)}, concurrency {args.concurrency}"))
    agent.on("disconnected", lambda code: say(f"disconnected ({code}); reconnecting"))
    agent.on("error", lambda err: say(f"error: {err}"))
    agent.on("task", lambda task: say(f"task {task['id']} {task['type']} attempt {task['attempts']}"))
    agent.run(stop_timeout=10.0)
    say("stopped")
    fleet.close()


if __name__ == "__main__":
    sys.exit(main())
