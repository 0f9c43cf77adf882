/**
 * `npm run bench -- commits [--tasks 20000] [--agents 50] [--rounds 2]`
 *
 * Where SQLite's WAL is checkpointed, in the same run: the plain-HTTP drain of `drain` (N tasks
 * submitted in bulk, then 50 agents whose one request a round completes their task and claims the
 * next) against a server checkpointing inside its commits (`FLEETD_SQLITE_CHECKPOINTS=commit`, as
 * SQLite does by default) and one checkpointing on a thread of its own (`thread`, the default),
 * alternating for `--rounds`. For each: the drain's rate and the server's CPU a task (its threads
 * together), the event loop's time in COMMIT a task (fleetd_store_commit_seconds_total), the
 * event-loop delay's P99 and longest stall, the thread's checkpoints, and the WAL's largest size
 * (sampled every 20 ms) — all over the server's life, submits included.
 */
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { LOOP_RESOLUTION_MS } from '../../src/core/stats.js';
import { authHeaders, flags, report, startServerProcess, type Row } from '../lib.js';
import { drainPlainHttp, type StartFleetd } from './drain.js';

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
  const start: StartFleetd = async (env = {}) => {
    const server = await startServerProcess({ ...env, FLEETD_SQLITE_CHECKPOINTS: mode });
    const wal = join(server.dataDir, 'fleetd.db-wal');
    let walPeak = 0;
    const sampling = setInterval(() => {
      if (existsSync(wal)) walPeak = Math.max(walPeak, statSync(wal).size);
    }, 20);
    const stop = server.stop;
    // Read before the server stops: its metrics cover its whole life.
    server.stop = async () => {
      clearInterval(sampling);
      try {
        const text = await (await fetch(`${server.url}/metrics`, { headers: authHeaders })).text();
        const metric = (name: string) => Number(new RegExp(`^${name}(?:\\{driver="sqlite"\\})? ([0-9.e+-]+)$`, 'm').exec(text)?.[1] ?? Number.NaN);
        const lagMs = (name: string) => Math.max(0, metric(name) * 1000 - LOOP_RESOLUTION_MS);
        seen = {
          'commits': metric('fleetd_store_commits_total'),
          'commit µs/task': Math.round((metric('fleetd_store_commit_seconds_total') * 1e6) / n),
          'loop delay p99 ms': Math.round(lagMs('nodejs_eventloop_lag_p99_seconds') * 10) / 10,
          'loop delay max ms': Math.round(lagMs('nodejs_eventloop_lag_max_seconds') * 10) / 10,
          'thread checkpoints': metric('fleetd_store_checkpoints_total'),
          'wal peak MB': Math.round(walPeak / 1e5) / 10,
        };
      } finally {
        await stop();
      }
    };
    return server;
  };
  const drained = await drainPlainHttp(start, n, agents);
  return { 'drain tasks/s': drained.drainRate, 'server cpu µs/task': drained.serverUs ?? '', ...seen };
}
