/**
 * `npm run bench -- commits [--tasks 20000] [--agents 50] [--rounds 2]`
 *
 * Where SQLite's WAL is checkpointed, in the same run: the plain-HTTP drain of `drain` (N tasks
 * submitted in bulk, then 50 agents whose one request a round completes their task and claims the
 * next) against a server checkpointing inside its commits (`FLEETD_SQLITE_CHECKPOINTS=commit`, the
 * default, as SQLite does) and one checkpointing on a thread of its own (`thread`),
 * alternating for `--rounds`. For each, over the drain alone: its rate, the server's CPU a task
 * (its threads together), the event loop's time in COMMIT a task
 * (fleetd_store_commit_seconds_total), the event-loop delay's P99 and longest stall, the thread's
 * checkpoints; and the WAL's size at the end, its largest (the file is reused, never shortened).
 */
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { flags, loopDelayOf, metricsOf, report, startServerProcess, type Row } from '../lib.js';
import { drainPlainHttp } from './drain.js';

type Mode = 'commit' | 'thread';

export default async function commits(args: string[]): Promise<void> {
  const f = flags(args, { tasks: 20_000, agents: 50, rounds: 2 });
  const rows: Row[] = [];
  for (let round = 1; round <= f.rounds; round++) {
    for (const mode of ['commit', 'thread'] as Mode[]) rows.push({ round, checkpoints: mode, ...(await drainWith(mode, f.tasks, f.agents)) });
  }
  report('commits', rows, { flags: f });
}

async function drainWith(mode: Mode, n: number, agents: number): Promise<Row> {
  let seen: Row = {};
  const drained = await drainPlainHttp(
    (env = {}) => startServerProcess({ ...env, FLEETD_SQLITE_CHECKPOINTS: mode }),
    n,
    agents,
    async (server) => {
      const before = await metricsOf(server);
      return async () => {
        const after = await metricsOf(server);
        const since = (name: string) => after(name) - before(name);
        const delay = loopDelayOf(after);
        const tenths = (ms: number) => Math.round(ms * 10) / 10;
        seen = {
          commits: since('fleetd_store_commits_total'),
          'commit µs/task': Math.round((since('fleetd_store_commit_seconds_total') * 1e6) / n),
          'loop delay p99 ms': tenths(delay.p99),
          'loop delay max ms': tenths(delay.max),
          'thread checkpoints': since('fleetd_store_checkpoints_total'),
          'wal MB': Math.round(statSync(join(server.dataDir, 'fleetd.db-wal')).size / 1e5) / 10,
        };
      };
    },
  );
  return { 'drain tasks/s': drained.drainRate, 'server cpu µs/task': drained.serverUs ?? '', ...seen };
}
