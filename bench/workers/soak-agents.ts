/**
 * Agents for the soak (bench/soak.ts), in a process of their own that the soak kills with SIGKILL
 * and starts again: each agent is the SDK's FleetAgent, over WebSocket push or HTTP long-poll, with
 * the id and token it was registered with, so that a restarted process resumes the same agents.
 * Each task takes 0–500 ms, so that a kill finds tasks running. Reports over IPC: `ready` once
 * every agent is connected, then every second the errors its agents met.
 */
import { readFileSync } from 'node:fs';
import { FleetAgent, FleetClient } from '../../src/client/index.js';

export interface SoakAgent {
  id: string;
  token: string;
  transport: 'ws' | 'poll';
}

const [url, agentsFile] = process.argv.slice(2);
const specs = JSON.parse(readFileSync(agentsFile, 'utf8')) as SoakAgent[];

let errors: string[] = [];
const agents = specs.map((spec) => {
  const agent = new FleetAgent(new FleetClient({ url, apiKey: spec.token }), {
    name: 'soak',
    capabilities: ['soak'],
    concurrency: 2,
    id: spec.id,
    token: spec.token,
    transport: spec.transport,
  });
  agent.on('error', (err: Error & { code?: string; cause?: { code?: string; message?: string } }) =>
    errors.push(`${spec.transport} ${spec.id}: ${err.code ?? ''} ${err.message} ${err.cause?.code ?? err.cause?.message ?? ''}`),
  );
  return agent;
});

await Promise.all(
  agents.map((agent) =>
    agent.work(async () => {
      await new Promise((r) => setTimeout(r, Math.random() * 500));
      return { ok: true };
    }),
  ),
);
process.send!({ type: 'ready' });

setInterval(() => {
  process.send!({ type: 'progress', errors });
  errors = [];
}, 1_000);

process.on('message', async (message: { type: string }) => {
  if (message.type !== 'stop') return;
  await Promise.all(agents.map((a) => a.stop({ timeoutMs: 5_000 })));
  process.send!({ type: 'progress', errors }, () => process.exit(0));
});
