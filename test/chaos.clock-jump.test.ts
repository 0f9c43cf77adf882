import assert from 'node:assert/strict';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { eventually, kill9, startFleetdProcess, tempDir } from './helpers.js';

/** Debian's libfaketime for this machine's architecture (`apt-get install faketime`; .ci/run installs it). */
const LIBFAKETIME = `/usr/lib/${process.arch === 'arm64' ? 'aarch64' : 'x86_64'}-linux-gnu/faketime/libfaketime.so.1`;

/**
 * A real fleetd process under libfaketime: its wall clock (Date.now) reads the offset in a file we
 * rewrite at run time, while its monotonic clock, which timers run on, stays true — as when NTP or
 * an operator steps a machine's clock.
 */
describe('a clock jump', { timeout: 120_000 }, () => {
  it('forward or back by minutes expires no lease early, holds none late, and keeps schedules and agents right', async (t) => {
    assert.ok(
      existsSync(LIBFAKETIME),
      `libfaketime is not installed (no ${LIBFAKETIME}): this test steps a real fleetd's clock with it. ` +
        'Install it with `apt-get install -y faketime` (.ci/run does; docs/testing.md lists what the suite needs).',
    );
    const dataDir = tempDir();
    const offsetFile = join(dataDir, 'faketime');
    const jumpTo = (offset: string) => writeFileSync(offsetFile, `${offset}\n`);
    jumpTo('+0');
    const { child, api } = await startFleetdProcess(join(dataDir, 'data'), {
      LD_PRELOAD: LIBFAKETIME,
      FAKETIME_TIMESTAMP_FILE: offsetFile,
      FAKETIME_DONT_FAKE_MONOTONIC: '1',
      // The offset file is read again at most once a second (reading it on every clock call is slow).
      FAKETIME_CACHE_DURATION: '1',
      FLEETD_AGENT_STALE_MS: '3000',
      FLEETD_AGENT_OFFLINE_MS: '6000',
    });
    let heartbeats: NodeJS.Timeout | undefined;
    try {
      const agent = await api.registerAgent(['tick']);
      heartbeats = setInterval(() => void api.post(`/v1/agents/${agent.id}/heartbeat`).catch(() => {}), 500);
      const statusOf = async (id: number) => (await api.get(`/v1/tasks/${id}`)).body;
      const claimOne = async (task: { id: number }) => {
        const [claimed] = await api.claim(agent.id, 1);
        assert.equal(claimed?.id, task.id);
      };
      const long = await api.submit({ type: 'tick', payload: 'long lease', leaseMs: 60_000, priority: 10 });
      await claimOne(long);
      const later = await api.submit({ type: 'tick', payload: 'a minute from now', delayMs: 60_000 });
      const serverNow = async () => Date.parse((await api.submit({ type: 'clock', requires: ['nobody'] })).createdAt);
      const before = await serverNow();

      // Forward five minutes. A short lease and a short delay prove maintenance ran after the jump.
      jumpTo('+300');
      await new Promise((r) => setTimeout(r, 1_500));
      const short = await api.submit({ type: 'tick', payload: 'short lease', leaseMs: 1_000, priority: 5 });
      await claimOne(short);
      const soon = await api.submit({ type: 'delay', payload: 'in a second', delayMs: 1_000, requires: ['nobody'] });
      await eventually(async () => (await statusOf(short.id)).status === 'queued', 20_000, 'the short lease to expire');
      await eventually(async () => (await statusOf(soon.id)).status === 'queued', 20_000, 'the short delay to pass');
      assert.equal((await statusOf(long.id)).status, 'leased', 'a 60 s lease outlived a jump of 5 minutes forward');
      assert.equal((await statusOf(later.id)).status, 'scheduled', 'a task due in a minute did not run early');
      assert.equal((await api.get(`/v1/agents/${agent.id}`)).body.status, 'online', 'a heartbeating agent stayed online');
      const afterForward = await serverNow();
      assert.ok(afterForward - before < 60_000, `fleetd's clock moved ${afterForward - before} ms, not the 5 minutes the wall clock jumped`);

      // Back ten minutes (five behind the true time). A 1 s lease still ends in about a second.
      jumpTo('-300');
      await new Promise((r) => setTimeout(r, 1_500));
      await claimOne(short);
      const soonAgain = await api.submit({ type: 'delay', payload: 'in a second, again', delayMs: 1_000, requires: ['nobody'] });
      await eventually(async () => (await statusOf(short.id)).status === 'queued', 20_000, 'the short lease to expire after the jump back');
      await eventually(async () => (await statusOf(soonAgain.id)).status === 'queued', 20_000, 'the short delay to pass after the jump back');
      const afterBack = await serverNow();
      assert.ok(afterBack >= afterForward, "fleetd's clock never goes back");
      assert.equal((await statusOf(long.id)).status, 'leased');
      assert.equal((await api.get(`/v1/agents/${agent.id}`)).body.status, 'online');

      // Nothing lost or doubled: the long lease completes once, the short task once.
      assert.equal((await api.post(`/v1/tasks/${long.id}/complete`, { agentId: agent.id, result: 'done' })).status, 200);
      await claimOne(short);
      assert.equal((await api.post(`/v1/tasks/${short.id}/complete`, { agentId: agent.id, result: 'done' })).status, 200);
      assert.equal((await api.post(`/v1/tasks/${short.id}/complete`, { agentId: agent.id, result: 'again' })).status, 409);
      const tick = (await api.get('/v1/stats')).body.tasks.byType.tick;
      assert.deepEqual(tick, { scheduled: 1, completed: 2 });
      t.diagnostic(`fleetd's clock moved ${afterForward - before} ms over the forward jump, ${afterBack - afterForward} ms over the jump back`);
    } finally {
      clearInterval(heartbeats);
      await kill9(child);
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
