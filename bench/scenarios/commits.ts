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
import { LOOP_RESOLUTION_MS } from '../../src/core/stats.js';
import { authHeaders, flags, report, startServerProcess, type Row, type ServerProcess } from '../lib.js';
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

/** One of the server's metrics now (SQLite's series of a driver-labelled one). A scrape also starts prom-client's event-loop delay afresh. */
async function metricsOf(server: ServerProcess): Promise<(name: string) => number> {
  const text = await (await fetch(`${server.url}/metrics`, { headers: authHeaders })).text();
  return (name) => Number(new RegExp(`^${name}(?:\\{driver="sqlite"\\})? ([0-9.e+-]+)$`, 'm').exec(text)?.[1] ?? Number.NaN);
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
        const lagMs = (name: string) => Math.round(Math.max(0, after(name) * 1000 - LOOP_RESOLUTION_MS) * 10) / 10;
        seen = {
          commits: since('fleetd_store_commits_total'),
          'commit µs/task': Math.round((since('fleetd_store_commit_seconds_total') * 1e6) / n),
          'loop delay p99 ms': lagMs('nodejs_eventloop_lag_p99_seconds'),
          'loop delay max ms': lagMs('nodejs_eventloop_lag_max_seconds'),
          'thread checkpoints': since('fleetd_store_checkpoints_total'),
          'wal MB': Math.round(statSync(join(server.dataDir, 'fleetd.db-wal')).size / 1e5) / 10,
        };
      };
    },
  );
  return { 'drain tasks/s': drained.drainRate, 'server cpu µs/task': drained.serverUs ?? '', ...seen };
}
