import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { fleetdBin, kill9, listeningUrl, tempDir } from './helpers.js';
import { runFleetd, type CliResult } from './cli-run.js';

/** One line on stderr naming the problem and its fix, and no stack, and a non-zero exit. */
function assertOneClearLine(result: CliResult, ...mentions: (string | RegExp)[]): void {
  assert.notEqual(result.code, 0, 'fleetd exited 0');
  const lines = result.stderr.trimEnd().split('\n');
  const errorLine = lines.at(-1)!;
  assert.match(errorLine, /^fleetd: /);
  assert.ok(!/^\s+at /m.test(result.stderr), `a stack on stderr:\n${result.stderr}`);
  for (const m of mentions) assert.match(errorLine, typeof m === 'string' ? new RegExp(m.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')) : m);
}

const env: NodeJS.ProcessEnv = { ...process.env, FLEETD_LOG_LEVEL: 'warn' };
delete env.FLEETD_ADMIN_KEY;

describe('start-up errors are one clear line and a non-zero exit (real processes)', () => {
  it('names a port another program holds, and --port; the first admin key is not used up', async () => {
    const holder = createServer();
    holder.listen(0, '127.0.0.1');
    await once(holder, 'listening');
    const port = (holder.address() as AddressInfo).port;
    const dataDir = tempDir();
    try {
      const result = await runFleetd(['start', '--host', '127.0.0.1', '--port', String(port), '--data-dir', dataDir], { env });
      assertOneClearLine(result, `port ${port} on 127.0.0.1 is already in use`, '--port');
      assert.equal(result.code, 1);

      // The failed start stored no admin key it never printed: the next start on the same data prints one.
      const child = spawn(process.execPath, [fleetdBin, 'start', '--host', '127.0.0.1', '--port', '0', '--data-dir', dataDir], {
        env: { ...env, FLEETD_LOG_LEVEL: 'info' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stderr = '';
      child.stderr!.on('data', (c) => (stderr += c));
      try {
        await listeningUrl(child);
        // stderr is another pipe than the log: the key may arrive just after the "listening" line.
        const exited = once(child, 'exit');
        child.kill('SIGTERM');
        await exited;
        assert.match(stderr, /^\s+fk_[A-Za-z0-9_-]+$/m);
      } finally {
        await kill9(child);
      }
    } finally {
      holder.close();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it('names a data directory fleetd may not write, as a user other than its owner', async () => {
    const root = tempDir();
    const readOnly = join(root, 'read-only');
    mkdirSync(readOnly);
    chmodSync(root, 0o755);
    chmodSync(readOnly, 0o555);
    // root writes anywhere: the test then runs fleetd as nobody, for whom 0555 means what it says.
    const asOther = process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : {};
    try {
      const result = await runFleetd(['start', '--port', '0', '--data-dir', readOnly], { env, ...asOther });
      assertOneClearLine(result, `the data directory ${readOnly} is not writable`, '--data-dir');
      const below = await runFleetd(['start', '--port', '0', '--data-dir', join(readOnly, 'below')], { env, ...asOther });
      assertOneClearLine(below, `the data directory ${join(readOnly, 'below')} cannot be created`, 'permission denied', '--data-dir');
      assert.ok(!existsSync(join(readOnly, 'below')));
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('ends with an error, not an endless mkdir loop, under /proc and below a file', async () => {
    const procResult = await runFleetd(['start', '--port', '0', '--data-dir', '/proc/fleetd'], { env });
    assertOneClearLine(procResult, 'the data directory /proc/fleetd cannot be created', '--data-dir');

    const root = tempDir();
    try {
      writeFileSync(join(root, 'a-file'), 'not a folder');
      const result = await runFleetd(['start', '--port', '0', '--data-dir', join(root, 'a-file', 'data')], { env });
      assertOneClearLine(result, `${join(root, 'a-file')} is a file, not a folder`);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('names a store file that is not a database', async () => {
    const dataDir = tempDir();
    try {
      writeFileSync(join(dataDir, 'fleetd.db'), 'this is not SQLite, and long enough to have a header'.repeat(20));
      const result = await runFleetd(['start', '--port', '0', '--data-dir', dataDir], { env });
      assertOneClearLine(result, join(dataDir, 'fleetd.db'), 'SQLITE_NOTADB', 'npx fleetd restore');
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it('refuses a store a later release migrated, which it would misread, and leaves it as it was', async () => {
    const dataDir = tempDir();
    const file = join(dataDir, 'fleetd.db');
    try {
      const db = new Database(file);
      db.exec("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL); INSERT INTO schema_migrations VALUES (999, 'from the future', 0)");
      db.close();
      // A store it took would start a server that never ends: killed after 30 s, so that the test fails rather than hangs.
      const result = await runFleetd(['start', '--port', '0', '--data-dir', dataDir], { env, timeout: 30_000 });
      assertOneClearLine(result, file, 'version 999', 'later fleetd', 'run the fleetd release that wrote it');
      const after = new Database(file, { readonly: true });
      try {
        assert.deepEqual(after.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").pluck().all(), ['schema_migrations'], 'no migration ran');
      } finally {
        after.close();
      }
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it('names a PostgreSQL URL that leads nowhere, its password masked', async () => {
    const refused = await runFleetd(['start', '--port', '0'], {
      env: { ...env, FLEETD_DATABASE_URL: 'postgres://fleetd:s3cret@127.0.0.1:1/fleetd' },
    });
    assertOneClearLine(refused, 'postgres://fleetd:***@127.0.0.1:1/fleetd', 'ECONNREFUSED', 'FLEETD_DATABASE_URL');
    assert.ok(!refused.stderr.includes('s3cret'));
    const noDatabase = await runFleetd(['start', '--port', '0'], {
      env: { ...env, FLEETD_DATABASE_URL: 'postgres://postgres@127.0.0.1:5432/fleetd_no_such_database' },
    });
    assertOneClearLine(noDatabase, 'database "fleetd_no_such_database" does not exist', 'FLEETD_DATABASE_URL');
  });
});
