import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { rmSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { after, describe, it } from 'node:test';
import { Api, adminKeyFor, kill9, tempDir, within } from './helpers.js';

/** `fleetd start` in its own process on a free port; resolves once it logs where it listens. */
async function startProcess(dataDir: string): Promise<{ child: ChildProcess; api: Api; logs: Record<string, unknown>[] }> {
  const adminKey = adminKeyFor({ dataDir });
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'start'], {
    env: { ...process.env, FLEETD_PORT: '0', FLEETD_HOST: '127.0.0.1', FLEETD_DATA_DIR: dataDir, FLEETD_LOG_LEVEL: 'info', FLEETD_ADMIN_KEY: adminKey },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const logs: Record<string, unknown>[] = [];
  const listening = new Promise<string>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`fleetd exited with ${code} before listening`)));
    createInterface({ input: child.stdout! }).on('line', (line) => {
      let entry: Record<string, unknown>;
      try {
        entry = JSON.parse(line) as Record<string, unknown>;
      } catch {
        return; // not a log line (a warning of Node's, say)
      }
      logs.push(entry);
      if (entry.msg === 'fleetd is listening') resolve(entry.url as string);
    });
  });
  try {
    return { child, api: new Api(await within(listening, 60_000, 'fleetd to listen'), adminKey), logs };
  } catch (err) {
    await kill9(child);
    throw err;
  }
}

describe('graceful shutdown', () => {
  const dataDir = tempDir();
  after(() => rmSync(dataDir, { recursive: true, force: true }));

  it('loses no acknowledged write across SIGTERM, answers waiting claims, and exits in bounded time', async () => {
    const first = await startProcess(dataDir);
    const acknowledged: number[] = [];
    try {
      const agent = await first.api.registerAgent(['never-submitted']);
      const waiting = first.api.post('/v1/tasks/claim', { agentId: agent.id, waitMs: 20_000 });

      let signalled = false;
      let sigterm!: () => void;
      const enoughWrites = new Promise<void>((resolve) => (sigterm = resolve));
      // Writers keep submitting through the signal, until the server stops answering.
      const writers = Array.from({ length: 4 }, async (_, w) => {
        for (let i = 0; ; i++) {
          try {
            const res = await first.api.post('/v1/tasks', { type: 'durable', payload: { w, i } });
            if (res.status !== 201) return;
            acknowledged.push(res.body.task.id);
            if (acknowledged.length >= 100) sigterm();
          } catch {
            return; // connection refused or reset: the server is gone
          }
        }
      });
      // Writers that all stop before the signal (the server refused them) end the wait too.
      await Promise.race([enoughWrites, Promise.all(writers)]);
      assert.ok(acknowledged.length >= 100, `the server stopped answering after ${acknowledged.length} writes, before any signal`);
      const signalledAt = Date.now();
      signalled = first.child.kill('SIGTERM');
      const [code] = await once(first.child, 'exit');
      const shutdownMs = Date.now() - signalledAt;
      await Promise.all(writers);
      assert.ok(signalled);
      assert.equal(code, 0);
      assert.ok(shutdownMs < 10_000, `took ${shutdownMs} ms`);
      const claim = await waiting;
      assert.ok(claim.status === 200 || claim.status === 503, `waiting claim got ${claim.status}`);
      assert.ok(first.logs.some((l) => l.msg === 'shutting down' && l.signal === 'SIGTERM'));
    } finally {
      await kill9(first.child);
    }

    const second = await startProcess(dataDir);
    try {
      const exported = await second.api.get('/v1/tasks/export?type=durable');
      const stored = new Set(
        (exported.body as string).split('\n').filter(Boolean).map((line) => (JSON.parse(line) as { id: number }).id),
      );
      const lost = acknowledged.filter((id) => !stored.has(id));
      assert.deepEqual(lost, [], `${lost.length} of ${acknowledged.length} acknowledged tasks lost`);
    } finally {
      await kill9(second.child);
    }
  });
});
