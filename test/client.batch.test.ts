import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import type { ChildProcess } from 'node:child_process';
import { eventually, kill9, startFleetdProcess, tempDir, type Api } from './helpers.js';

/** Sums a Prometheus counter's samples whose labels include every one given. */
function sample(metrics: string, name: string, labels: Record<string, string>): number {
  let total = 0;
  for (const line of metrics.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) total += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return total;
}

/**
 * The SDK batches what finishes within one tick: an agent process whose tasks all finish together
 * reports them in a few batches (one frame, or one POST /v1/tasks/complete), never one message per
 * task, and every task is completed or failed as its handler said. Real processes: fleetd as it
 * ships (dist/) and the agent in a process of its own.
 */
describe('SDK batched completion (real processes)', () => {
  const dataDir = tempDir();
  let fleetd: { child: ChildProcess; api: Api; adminKey: string } | undefined;
  before(async () => {
    fleetd = await startFleetdProcess(dataDir, { FLEETD_TASK_BACKOFF_MS: '10' });
  });
  after(async () => {
    if (fleetd) await kill9(fleetd.child);
    rmSync(dataDir, { recursive: true, force: true });
  });

  for (const transport of ['ws', 'poll'] as const) {
    it(`reports the tasks of one tick together over ${transport === 'ws' ? 'WebSocket' : 'HTTP'}`, async () => {
      const type = `batch-sdk-${transport}`;
      const n = 60;
      const payloads = Array.from({ length: n }, (_, i) => (i % 10 === 9 ? 'fail' : i));
      const submitted = await fleetd!.api.post('/v1/tasks/batch', { tasks: payloads.map((payload) => ({ type, payload, maxAttempts: 1 })) });
      assert.equal(submitted.status, 201);
      const agent = spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/batching-agent.ts'], {
        env: { ...process.env, FLEETD_URL: fleetd!.api.base, FLEETD_API_KEY: fleetd!.adminKey, TASK_TYPE: type, CONCURRENCY: '20', TRANSPORT: transport },
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      try {
        const finished = async () => {
          const stats = (await fleetd!.api.get('/v1/stats')).body.tasks.byType[type] ?? {};
          return (stats.completed ?? 0) + (stats.dead ?? 0) === n;
        };
        await eventually(finished, 60_000, `the agent to finish ${n} tasks`);
        const tasks = (await fleetd!.api.get(`/v1/tasks?type=${type}&limit=100`)).body.items;
        for (const t of tasks) {
          if (t.payload === 'fail') assert.deepEqual([t.status, t.error.message], ['dead', 'asked to fail']);
          else assert.deepEqual([t.status, t.result], ['completed', { echoed: t.payload }]);
        }
        const metrics = (await fleetd!.api.get('/metrics')).body as string;
        const reports =
          transport === 'ws'
            ? {
                batched: sample(metrics, 'fleetd_agent_stream_messages_total', { type: 'batch' }),
                single: ['complete', 'fail'].reduce((sum, t) => sum + sample(metrics, 'fleetd_agent_stream_messages_total', { type: t }), 0),
              }
            : {
                batched: sample(metrics, 'fleetd_http_request_duration_seconds_count', { route: '/v1/tasks/complete' }),
                single:
                  sample(metrics, 'fleetd_http_request_duration_seconds_count', { route: '/v1/tasks/:id/complete' }) +
                  sample(metrics, 'fleetd_http_request_duration_seconds_count', { route: '/v1/tasks/:id/fail' }),
              };
        assert.ok(reports.batched >= 1, `no batch was sent: ${JSON.stringify(reports)}`);
        assert.ok(reports.batched + reports.single < n / 2, `${n} tasks took ${JSON.stringify(reports)} reports`);
      } finally {
        await kill9(agent);
      }
    });
  }
});
