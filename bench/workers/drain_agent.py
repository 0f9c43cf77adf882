"""One Python SDK agent for the python-drain bench: the same work as drain-agent.ts. Prints
`ready` once connected; SIGTERM stops it."""
import sys

from fleetd import Fleet, Task, TaskContext

url, api_key, concurrency = sys.argv[1:4]
agent = Fleet(url, api_key=api_key).agent("drain-py", ["drain"], int(concurrency), transport="ws")


@agent.task("drain")
async def drain(task: Task, ctx: TaskContext) -> object:
    return task["payload"]


agent.on("connected", lambda transport: print("ready", flush=True))
agent.run()
