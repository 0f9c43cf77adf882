import assert from 'node:assert/strict';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { tempDir } from './helpers.js';
import { runCommand, runFleetd } from './cli-run.js';

const repo = join(import.meta.dirname, '..');
const withoutFleetdSettings = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('FLEETD_')));

describe('the CLI as the README writes it (real processes)', () => {
  it('`npx fleetd keys --help` in the clone prints the keys help', async () => {
    // npx installs the clone into its cache to run it, and that install runs the clone's prepare
    // script (npm run build), which would rewrite dist/ under the fleetd processes other tests are
    // starting at the same moment: the suite has built it already, so no install script runs here.
    // A cache of its own, as a fresh machine's: npx reuses what a cache holds for the same folder
    // (an earlier clone's link) without looking again.
    const cache = tempDir();
    let result: Awaited<ReturnType<typeof runCommand>>;
    try {
      result = await runCommand('npx', ['--offline', 'fleetd', 'keys', '--help'], {
        cwd: repo,
        env: { ...process.env, npm_config_ignore_scripts: 'true', npm_config_cache: cache },
      });
    } finally {
      rmSync(cache, { recursive: true, force: true });
    }
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /npx fleetd keys create --scope admin\|submit\|read/);
    assert.match(result.stdout, /npx fleetd keys list/);
    assert.match(result.stdout, /npx fleetd keys revoke ID/);
  });

  it('the top-level usage says npx fleetd and lists every keys command', async () => {
    const result = await runFleetd(['--help']);
    assert.equal(result.code, 0);
    for (const line of ['npx fleetd start', 'npx fleetd keys create', 'npx fleetd keys list', 'npx fleetd keys revoke ID', 'npx fleetd agent']) {
      assert.ok(result.stdout.includes(line), `usage lacks "${line}"`);
    }
    assert.ok(!/^\s+fleetd /m.test(result.stdout), 'a usage line without npx');
  });

  it('`keys` refuses to make a store, naming the data directory it looked in', async () => {
    const folder = tempDir();
    try {
      const here = await runFleetd(['keys', 'create', '--scope', 'read'], { cwd: folder, env: withoutFleetdSettings });
      assert.equal(here.code, 1);
      assert.match(here.stderr, new RegExp(`no fleetd store in ${join(folder, '.fleetd')}`));
      assert.match(here.stderr, /--data-dir/);
      assert.equal(here.stdout, '', 'a key was printed');
      assert.deepEqual(readdirSync(folder), [], 'the keys command made files');

      const named = join(folder, 'elsewhere');
      const list = await runFleetd(['keys', 'list', '--data-dir', named]);
      assert.equal(list.code, 1);
      assert.match(list.stderr, new RegExp(`no fleetd store in ${named}`));
      assert.ok(!existsSync(named));
    } finally {
      rmSync(folder, { recursive: true, force: true });
    }
  });

  it('an unknown keys command is refused before any store is opened', async () => {
    const folder = tempDir();
    try {
      const result = await runFleetd(['keys', 'rename'], { cwd: folder });
      assert.equal(result.code, 2);
      assert.match(result.stderr, /keys rename: is not a keys command/);
      assert.deepEqual(readdirSync(folder), []);
    } finally {
      rmSync(folder, { recursive: true, force: true });
    }
  });
});
