/**
 * `npm run bench -- python-drain [--tasks 20000] [--concurrency 50]`
 *
 * The drain rate of one Python SDK agent (clients/python, on /usr/bin/python3) at the given
 * concurrency over WebSocket, against one TypeScript SDK agent doing the same in the same run: a
 * backlog of tasks is submitted first, then the agent starts, and the clock runs from its
 * connection to the last completion the server counts. Each SDK gets a fresh server. Reports
 * tasks/s, the agent process's CPU time and RSS, the server's CPU a task (what the SDK's way of
 * talking costs the server), and the Python ÷ TypeScript ratios.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { BENCH_ADMIN_KEY, authHeaders, cpuMsOf, flags, report, rssMbOf, startServerProcess, type Row } from '../lib.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');

type Sdk = 'typescript' | 'python';

function startAgent(sdk: Sdk, url: string, concurrency: number): ChildProcess {
  const args = [url, BENCH_ADMIN_KEY, String(concurrency)];
  return sdk === 'typescript'
    ? spawn(process.execPath, ['--import', 'tsx', join(here, '../workers/drain-agent.ts'), ...args], { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] })
    : spawn('/usr/bin/python3', [join(here, '../workers/drain_agent.py'), ...args], {
        cwd: root,
        env: { ...process.env, PYTHONPATH: join(root, 'clients/python') },
        stdio: ['ignore', 'pipe', 'inherit'],
      });
}

async function completed(url: string): Promise<number> {
  const res = await fetch(`${url}/v1/stats`, { headers: authHeaders });
  return ((await res.json()) as { tasks: { byStatus: { completed: number } } }).tasks.byStatus.completed;
}

async function drain(sdk: Sdk, tasks: number, concurrency: number): Promise<Row> {
  process.stdout.write(`\n— ${sdk} agent, ${tasks} tasks at concurrency ${concurrency} —\n`);
  const server = await startServerProcess();
  let agent: ChildProcess | undefined;
  try {
    for (let i = 0; i < tasks; i += 1000) {
      const batch = Array.from({ length: Math.min(1000, tasks - i) }, (_, j) => ({ type: 'drain', payload: { n: i + j } }));
      const res = await fetch(`${server.url}/v1/tasks/batch`, { method: 'POST', headers: { ...authHeaders, 'content-type': 'application/json' }, body: JSON.stringify({ tasks: batch }) });
      if (res.status !== 201) throw new Error(`submit: ${res.status} ${await res.text()}`);
    }
    agent = startAgent(sdk, server.url, concurrency);
    const lines = createInterface({ input: agent.stdout! });
    for await (const line of lines) if (line === 'ready') break;
    const started = performance.now();
    const cpuAtStart = cpuMsOf(agent.pid!);
    const serverCpuAtStart = server.cpuMs();
    let rssPeak = 0;
    while ((await completed(server.url)) < tasks) {
      rssPeak = Math.max(rssPeak, rssMbOf(agent.pid!));
      await new Promise((r) => setTimeout(r, 50));
    }
    const seconds = (performance.now() - started) / 1000;
    const cpuSeconds = (cpuMsOf(agent.pid!) - cpuAtStart) / 1000;
    const serverUs = Math.round(((server.cpuMs() - serverCpuAtStart) * 1000) / tasks);
    return {
      sdk,
      tasks,
      seconds,
      'tasks/s': Math.round(tasks / seconds),
      'agent CPU s': cpuSeconds,
      'agent CPU ms/1k tasks': (cpuSeconds * 1e6) / tasks,
      'server CPU µs/task': serverUs,
      'agent RSS MB': rssPeak,
    };
  } finally {
    if (agent && agent.exitCode === null) {
      const exited = once(agent, 'exit');
      agent.kill('SIGTERM');
      await exited;
    }
    await server.stop();
  }
}

export default async function pythonDrain(args: string[]): Promise<void> {
  const f = flags(args, { tasks: 20_000, concurrency: 50 });
  const ts = await drain('typescript', f.tasks, f.concurrency);
  const py = await drain('python', f.tasks, f.concurrency);
  const ratio = (k: string) => Math.round(((py[k] as number) / (ts[k] as number)) * 100) / 100;
  report('python-drain', [ts, py, { sdk: 'python ÷ typescript', 'tasks/s': ratio('tasks/s'), 'agent CPU ms/1k tasks': ratio('agent CPU ms/1k tasks'), 'server CPU µs/task': ratio('server CPU µs/task'), 'agent RSS MB': ratio('agent RSS MB') }], { flags: f });
}
