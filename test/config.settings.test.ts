import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { ConfigError, describeSettings, resolveConfig } from '../src/config.js';
import { tempDir } from './helpers.js';

const run = promisify(execFile);
const cli = ['--import', 'tsx', 'src/cli/main.ts'];

function configFile(content: unknown): string {
  const path = join(tempDir(), 'fleetd.config.json');
  writeFileSync(path, typeof content === 'string' ? content : JSON.stringify(content));
  return path;
}

function rejects(fn: () => unknown, setting: RegExp): void {
  assert.throws(fn, (err: unknown) => err instanceof ConfigError && setting.test(err.message), `expected an error naming ${setting}`);
}

describe('configuration', () => {
  it('reads fleetd.config.json, under the environment and the overrides', () => {
    const FLEETD_CONFIG = configFile({ port: 8081, cacheTtlMs: 5000, slowRequestMs: 250 });
    const config = resolveConfig({ slowRequestMs: 100 }, { FLEETD_CONFIG, FLEETD_CACHE_TTL_MS: '7000' });
    assert.equal(config.port, 8081);
    assert.equal(config.cacheTtlMs, 7000);
    assert.equal(config.slowRequestMs, 100);
    assert.ok(Object.isFrozen(config));
  });

  it('names the setting and the reason when a value is wrong, wherever it comes from', () => {
    rejects(() => resolveConfig({}, { FLEETD_CONFIG: configFile({ cacheTtl: 5 }) }), /cacheTtl: is not a fleetd setting/);
    rejects(() => resolveConfig({}, { FLEETD_CONFIG: configFile({ rateLimitRead: -1 }) }), /rateLimitRead: -1 is below the minimum of 0/);
    rejects(() => resolveConfig({}, { FLEETD_CONFIG: configFile('{"port": ') }), /fleetd\.config\.json: is not valid JSON/);
    rejects(() => resolveConfig({}, { FLEETD_CONFIG: configFile([1]) }), /must hold a JSON object/);
    rejects(() => resolveConfig({}, { FLEETD_CONFIG: '/nonexistent/fleetd.json' }), /FLEETD_CONFIG: .* does not exist/);
    rejects(() => resolveConfig({}, { FLEETD_METRICS: 'yes' }), /FLEETD_METRICS: "yes" is not one of on, off/);
    rejects(() => resolveConfig({}, { FLEETD_REDIS_URL: 'localhost:6379' }), /FLEETD_REDIS_URL: must be a redis:\/\//);
  });

  it('lists every setting with its variable and default in `fleetd start --help`', async () => {
    const { stdout } = await run(process.execPath, [...cli, 'start', '--help']);
    for (const s of describeSettings()) {
      const line = stdout.split('\n').find((l) => l.includes(` ${s.env} `));
      assert.ok(line, `${s.env} is not listed`);
      assert.ok(line.includes(s.key) && line.includes(`default ${JSON.stringify(s.default)}`), line);
    }
    assert.match(stdout, /fleetd\.config\.json/);
  });

  it('refuses to start on a bad setting, naming it', async () => {
    const FLEETD_CONFIG = configFile({ agentStaleMs: 5000, agentOfflineMs: 1000 });
    await assert.rejects(run(process.execPath, [...cli, 'start'], { env: { ...process.env, FLEETD_CONFIG } }), (err: { code: number; stderr: string }) => {
      assert.equal(err.code, 2);
      assert.match(err.stderr, /invalid setting agentOfflineMs/);
      return true;
    });
  });
});
