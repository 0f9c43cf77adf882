import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runSoak } from '../bench/soak.js';

/**
 * A short soak (the full one is `npm run bench -- soak`): SDK agents on WebSocket and long-poll in
 * three processes, one killed with SIGKILL every 4 s and started again, under steady submits.
 * Nothing acknowledged may be lost, nothing completed or submitted twice, and no request may fail.
 * The server runs from dist/ (`npm run build` first).
 */
test('a fleet whose agent processes are killed again and again loses nothing, doubles nothing and meets no error', { timeout: 240_000 }, async (t) => {
  // A long-poll agent killed holding tasks gives them back when their leases expire: 10 s leases
  // rather than the default 30 s, so that the drain after the last kill waits 10 s, not 30 s.
  // Handlers take at most half a second, so that no live agent's lease runs out.
  const result = await runSoak({
    seconds: 25,
    agents: 60,
    rate: 40,
    killEverySeconds: 4,
    agentsPerProcess: 20,
    drainSeconds: 90,
    serverEnv: { FLEETD_TASK_LEASE_MS: '10000' },
  });
  const summary = JSON.stringify({ ...result, minutes: undefined, rss: undefined });
  t.diagnostic(summary);
  assert.ok(result.kills >= 4, `only ${result.kills} kills: ${summary}`);
  assert.ok(result.acknowledged >= 500, `only ${result.acknowledged} submits acknowledged: ${summary}`);
  assert.equal(result.lost, 0, `tasks lost: ${summary}`);
  assert.equal(result.duplicates, 0, `duplicates: ${summary}`);
  assert.equal(result.errors, 0, `errors: ${summary}`);
  assert.equal(result.completed, result.acknowledged);
});
