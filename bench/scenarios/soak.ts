/**
 * `npm run bench -- soak [--seconds 600] [--agents 1000] [--rate 200] [--kill-every 10] [--agents-per-process 100] [--drain 120]`
 *
 * The soak (bench/soak.ts): a fleet of SDK agents, half on WebSocket push and half on long-poll, in
 * several processes, one of which is killed with SIGKILL every `--kill-every` seconds and started
 * again; steady submits at `--rate` per second for `--seconds`. Prints a table per minute (submits,
 * completions, errors, submit P50/P99, submit-to-complete P99, server RSS) and the totals: error
 * rate, tasks lost, duplicates, and the slope of the server's RSS.
 */
import { flags, report } from '../lib.js';
import { runSoak } from '../soak.js';

export default async function soak(args: string[]): Promise<void> {
  const f = flags(args, { seconds: 600, agents: 1000, rate: 200, 'kill-every': 10, 'agents-per-process': 100, drain: 120 });
  const result = await runSoak({
    seconds: f.seconds,
    agents: f.agents,
    rate: f.rate,
    killEverySeconds: f['kill-every'],
    agentsPerProcess: f['agents-per-process'],
    drainSeconds: f.drain,
    log: (line) => process.stdout.write(`  ${line}\n`),
  });
  const { minutes, rss, errorSamples, errorKinds, ...totals } = result;
  report('soak', minutes, { flags: f, totals, rss, errorSamples, errorKinds });
  process.stdout.write(`\n${JSON.stringify({ ...totals, errorRate: Number(totals.errorRate.toFixed(6)) }, null, 2)}\n`);
  const kinds = Object.entries(errorKinds).sort(([, a], [, b]) => b - a);
  if (kinds.length > 0) process.stdout.write(`errors by kind:\n${kinds.map(([kind, n]) => `  ${n}× ${kind}`).join('\n')}\n`);
}
