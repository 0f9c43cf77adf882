import { parseArgs } from 'node:util';
import { FleetClient, NonRetryableError, type TaskJson } from '../client/index.js';
import { ConfigError } from '../config.js';

export const agentUsage = `Usage:
  npx fleetd agent [--url URL] [--api-key KEY] [--capabilities echo,sleep] [--concurrency N] [--name NAME] [--transport auto|ws|poll]

Runs a demo agent against a fleetd server (default http://localhost:7070, or FLEETD_URL). It
registers with an API key of submit scope or more (--api-key, or FLEETD_API_KEY), then works with
its own agent token:
  echo   completes with its payload
  sleep  waits payload.ms (default 1000) milliseconds, then completes

--transport: auto (the default) pushes over WebSocket and falls back to long-poll; ws or poll forces one.`;

const handlers: Record<string, (task: TaskJson, signal: AbortSignal) => Promise<unknown>> = {
  echo: async (task) => task.payload,
  sleep: (task, signal) => {
    const ms = Number((task.payload as { ms?: unknown } | null)?.ms ?? 1000);
    if (!Number.isFinite(ms) || ms < 0) throw new NonRetryableError(`payload.ms must be a number of milliseconds, not ${ms}`);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => resolve({ slept: ms }), ms);
      signal.addEventListener('abort', () => (clearTimeout(timer), reject(signal.reason)), { once: true });
    });
  },
};

/** `fleetd agent`: a real agent process, so that a newcomer can watch tasks flow in two terminals. */
export async function runDemoAgent(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      url: { type: 'string', default: process.env.FLEETD_URL ?? 'http://localhost:7070' },
      'api-key': { type: 'string', default: process.env.FLEETD_API_KEY },
      capabilities: { type: 'string', default: 'echo,sleep' },
      concurrency: { type: 'string', default: '8' },
      name: { type: 'string', default: `demo-${process.pid}` },
      transport: { type: 'string', default: 'auto' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(`${agentUsage}\n`);
    return;
  }
  const capabilities = values.capabilities.split(',').map((c) => c.trim()).filter(Boolean);
  const unknown = capabilities.filter((c) => !(c in handlers));
  const concurrency = Number(values.concurrency);
  if (unknown.length > 0) throw new ConfigError('--capabilities', `the demo agent has no handler for ${unknown.join(', ')} (it knows ${Object.keys(handlers).join(', ')})`);
  if (!Number.isSafeInteger(concurrency) || concurrency < 1) throw new ConfigError('--concurrency', `"${values.concurrency}" is not a whole number of at least 1`);
  const transport = values.transport;
  if (transport !== 'auto' && transport !== 'ws' && transport !== 'poll') throw new ConfigError('--transport', `"${transport}" is not auto, ws or poll`);

  const log = (line: string) => process.stdout.write(`${new Date().toISOString()} ${line}\n`);
  const client = new FleetClient({ url: values.url, apiKey: values['api-key'] });
  const agent = client.agent({ name: values.name, capabilities, concurrency, transport });
  agent.on('connected', ({ transport }) => log(`connected to ${values.url} (${transport}) as ${agent.id}, capabilities ${capabilities.join(',')}, concurrency ${concurrency}`));
  agent.on('disconnected', ({ code }) => log(`disconnected (${code}); reconnecting`));
  agent.on('error', (err: Error & { code?: string }) => log(`error: ${err.code ? `${err.code} ` : ''}${err.message}`));
  agent.on('task', (task: TaskJson) => log(`task ${task.id} ${task.type} attempt ${task.attempts}`));
  await agent.work(async (task, { signal }) => {
    const handler = handlers[task.type];
    if (!handler) throw new NonRetryableError(`the demo agent does not do ${task.type} tasks`);
    const result = await handler(task, signal);
    log(`task ${task.id} done`);
    return result;
  });
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log(`${signal}: finishing ${agent.inFlight} task(s) in hand`);
    agent.stop({ timeoutMs: 10_000 }).then(() => process.exit(0));
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}
