import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import type { TestContext } from 'node:test';
import { type Api, eventually, kill9 } from '../helpers.js';

export interface Kill9Options {
  /** Starts `fleetd start` on the same data each time: the same folder, or the same PostgreSQL schema. */
  start(): Promise<{ child: ChildProcess; api: Api }>;
  /** Tasks in the workload. */
  tasks: number;
  /** kill -9 this many times while the workload runs. */
  crashes: number;
}

const BATCH = 100;
const AGENTS = 20;
/**
 * Most tasks the submitters may have acknowledged beyond those completed. Unbounded, they sent the
 * rest of the workload while the agents were still on its first part (5,200 acknowledged to 1,025
 * completed), and under a full suite a crash could find no moment with all three kinds of
 * request in flight before the last submit.
 */
const MAX_LEAD = 2_000;
/**
 * Long enough that a completion slowed by a loaded machine still lands inside its lease (shorter
 * ones made the run churn through lost leases under a full test suite), short enough that the
 * tasks leased at each crash come back within seconds.
 */
const LEASE_MS = 5_000;

/**
 * The crash test both store drivers share. A workload of `tasks` tasks runs through a real fleetd
 * process — submitted in batches by four submitters, claimed by twenty agents, completed one by one
 * — and the process is killed with SIGKILL `crashes` times at random moments, each time only when
 * submits, claims and completions are all in flight at once. After each crash fleetd is restarted on
 * the same data and the workload carries on: submitters resend every batch whose answer they did not
 * get, under the same idempotency keys, as a careful client would.
 *
 * At the end, with everything drained: every task exists exactly once (one per key: none lost, none
 * duplicated by a resend), every acknowledged submit is among them, every task is completed, no task
 * had two acknowledged completions, and each task's completion is the one that was acknowledged.
 */
export async function kill9UnderLoad(t: TestContext, options: Kill9Options): Promise<void> {
  const batchCount = Math.ceil(options.tasks / BATCH);
  const unsent = Array.from({ length: batchCount }, (_, b) => b);
  const acknowledged = new Map<string, number>();
  const completedBy = new Map<number, string>();
  const completions = new Map<number, number>();
  const inFlight = { submits: 0, claims: 0, completes: 0 };
  let agents: { id: string; token: string }[] = [];

  /** The crash moment waited for, if any: checked whenever a request starts, not by polling. */
  let crashMoment: (() => void) | undefined;
  const tracked = async <T>(kind: keyof typeof inFlight, call: () => Promise<T>): Promise<T> => {
    inFlight[kind]++;
    crashMoment?.();
    try {
      return await call();
    } finally {
      inFlight[kind]--;
    }
  };
  const batchOf = (b: number) =>
    Array.from({ length: Math.min(BATCH, options.tasks - b * BATCH) }, (_, i) => {
      const n = b * BATCH + i;
      return { type: 'chaos', payload: { n }, idempotencyKey: `chaos-${n}`, leaseMs: LEASE_MS };
    });

  /** Runs the fleet against one server until `until()` or until the server dies under it. */
  const runFleet = (api: Api, until: () => boolean) => {
    const submitters = Array.from({ length: 4 }, async () => {
      while (!until() && unsent.length > 0) {
        if (acknowledged.size - completions.size >= MAX_LEAD) {
          await new Promise((r) => setTimeout(r, 20));
          continue;
        }
        const b = unsent.shift()!;
        try {
          const res = await tracked('submits', () => api.post('/v1/tasks/batch', { tasks: batchOf(b) }));
          if (res.status !== 201) throw new Error(`batch ${b}: ${res.status} ${JSON.stringify(res.body)}`);
          for (const { task } of res.body.items) acknowledged.set(task.idempotencyKey, task.id);
        } catch (err) {
          unsent.push(b); // no answer: resend it to the next server
          throw err;
        }
      }
    });
    // Each agent acts with its own token, as a real agent does.
    const workers = agents.map(async ({ id: agentId, token }) => {
      const own = api.as(token);
      while (!until()) {
        const claim = await tracked('claims', () => own.post('/v1/tasks/claim', { agentId, max: 10, waitMs: 500 }));
        if (claim.status !== 200) throw new Error(`claim: ${claim.status} ${JSON.stringify(claim.body)}`);
        await Promise.all(
          claim.body.tasks.map(async (task: { id: number }) => {
            const res = await tracked('completes', () => own.post(`/v1/tasks/${task.id}/complete`, { agentId, result: { by: agentId } }));
            if (res.status === 200) {
              completions.set(task.id, (completions.get(task.id) ?? 0) + 1);
              completedBy.set(task.id, agentId);
            } else if (res.body?.error?.code === 'FLEETD_ERR_LEASE_LOST') leasesLost++;
          }),
        );
      }
    });
    // A loop that fails while its server is up stops for good: remember why, for the timeout message.
    const noted = (loop: Promise<void>) =>
      loop.catch((err) => {
        if (!until()) loopFailure = String(err);
        throw err;
      });
    return Promise.allSettled([...submitters, ...workers].map(noted));
  };
  let loopFailure = 'none';
  let leasesLost = 0;
  const state = () => `${acknowledged.size} acknowledged, ${completions.size} completed, in flight ${JSON.stringify(inFlight)}, ${leasesLost} completions refused for a lost lease, last loop failure: ${loopFailure}`;

  // Crash moments: random, increasing, all before the last batch is acknowledged.
  const thresholds = Array.from({ length: options.crashes }, (_, c) => Math.floor(((c + 0.1 + Math.random() * 0.8) / options.crashes) * 0.9 * options.tasks));
  // The server and the fleet of the moment: whatever fails, `finally` stops both, so that a failure
  // never leaves a fleetd process or request loops running (they would keep the suite from ending).
  let child: ChildProcess | undefined;
  let running: Promise<PromiseSettledResult<void>[]> | undefined;
  let stopped = false;
  // A test that times out is abandoned, not stopped: its signal ends the waits below, so that
  // `finally` runs at once rather than when a wait gives up minutes later.
  const live = <T>(check: () => T) => () => {
    t.signal.throwIfAborted();
    return check();
  };
  const waitFor = (check: () => boolean | Promise<boolean>, timeoutMs: number, what: string) =>
    eventually(live(check), timeoutMs, what).catch((err: Error) => {
      throw new Error(`${err.message} (${state()})`);
    });
  /**
   * Resolves at the first moment at least `threshold` tasks are acknowledged and submits, claims and
   * completions are all in flight. A poll could miss every such moment on a fast server: the
   * submitters can send the rest of the workload between two looks while the agents wait.
   */
  const underWay = (threshold: number, what: string) =>
    new Promise<void>((resolve, reject) => {
      const done = (err?: Error) => {
        crashMoment = undefined;
        clearTimeout(timer);
        t.signal.removeEventListener('abort', aborted);
        if (err) reject(err);
        else resolve();
      };
      const aborted = () => done(new Error(`${what}: the test was abandoned (${state()})`));
      const timer = setTimeout(() => done(new Error(`timed out waiting for ${what} (${state()})`)), 120_000);
      t.signal.addEventListener('abort', aborted);
      crashMoment = () => {
        if (acknowledged.size >= threshold && inFlight.submits > 0 && inFlight.claims > 0 && inFlight.completes > 0) done();
      };
    });
  try {
    for (const [c, threshold] of thresholds.entries()) {
      const started = await options.start();
      child = started.child;
      if (agents.length === 0) {
        const res = await started.api.post('/v1/agents/batch', { agents: Array.from({ length: AGENTS }, (_, i) => ({ name: `chaos-${i}`, capabilities: ['chaos'] })) });
        agents = res.body.items.map((r: { agent: { id: string }; token: string }) => ({ id: r.agent.id, token: r.token }));
      }
      running = runFleet(started.api, () => stopped);
      await underWay(threshold, `crash ${c + 1}: the workload under way`);
      const at = { ...inFlight, acknowledged: acknowledged.size, completed: completions.size };
      stopped = true;
      await kill9(child);
      await running;
      stopped = false;
      t.diagnostic(`crash ${c + 1}: ${at.acknowledged} tasks acknowledged, ${at.completed} completed, ${at.acknowledged - at.completed} in flight; requests in flight: ${at.submits} submits, ${at.claims} claims, ${at.completes} completions`);
    }

    const started = await options.start();
    child = started.child;
    const { api } = started;
    running = runFleet(api, () => stopped);
    await waitFor(
      async () => {
        if (unsent.length > 0) return false;
        const chaos = (await api.get('/v1/stats')).body.tasks.byType.chaos ?? {};
        return (stopped = chaos.completed === options.tasks);
      },
      180_000,
      'every task completed',
    );
    for (const outcome of await running) if (outcome.status === 'rejected') throw outcome.reason;

    const stored = String((await api.get('/v1/tasks/export?type=chaos')).body)
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { id: number; idempotencyKey: string; status: string; attempts: number; result: { by: string } });
    const keys = new Set(stored.map((task) => task.idempotencyKey));
    assert.equal(stored.length, options.tasks, 'one task per key: none lost, none duplicated');
    assert.equal(keys.size, options.tasks);
    const ids = new Set(stored.map((task) => task.id));
    assert.deepEqual([...acknowledged.values()].filter((id) => !ids.has(id)), [], 'acknowledged tasks lost');
    assert.deepEqual(stored.filter((task) => task.status !== 'completed').map((task) => task.id), [], 'tasks never completed');
    assert.deepEqual([...completions].filter(([, n]) => n > 1), [], 'tasks completed twice');
    assert.deepEqual(stored.filter((task) => completedBy.has(task.id) && task.result.by !== completedBy.get(task.id)).map((task) => task.id), [], 'a completion other than the acknowledged one');
    const retried = stored.filter((task) => task.attempts > 1).length;
    t.diagnostic(`${options.tasks} tasks through ${options.crashes} crashes; ${retried} ran again after a lost lease`);
  } finally {
    stopped = true;
    if (child) await kill9(child);
    await running;
  }
}
