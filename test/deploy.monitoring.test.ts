import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { startTestServer, type TestServer } from './helpers.js';

const run = promisify(execFile);
const DEPLOY = join(import.meta.dirname, '..', 'deploy');
/** Debian's `prometheus` package (`apt-get install -y prometheus`). */
const PROMTOOL = '/usr/bin/promtool';

/** The metric names a file's queries use: fleetd's own and the Node.js process metrics it exports. */
function metricNames(text: string): string[] {
  return [...new Set(text.match(/\b(?:fleetd|nodejs|process)_[a-z0-9_]+\b/g) ?? [])].sort();
}

/** Every series name /metrics can carry: each metric's name, and a histogram's _bucket, _sum and _count. */
function exposedNames(metrics: string): Set<string> {
  const names = new Set<string>();
  for (const [, name, kind] of metrics.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    names.add(name);
    if (kind === 'histogram' || kind === 'summary') for (const suffix of ['_bucket', '_sum', '_count']) names.add(name + suffix);
  }
  return names;
}

describe('monitoring files in deploy/', () => {
  let server: TestServer;
  let exposed: Set<string>;

  before(async () => {
    server = await startTestServer();
    const res = await server.api.get('/metrics');
    assert.equal(res.status, 200);
    exposed = exposedNames(res.body as string);
  });

  after(async () => {
    await server?.stop();
  });

  it('has alerting rules that promtool accepts', async () => {
    const { stdout } = await run(PROMTOOL, ['check', 'rules', join(DEPLOY, 'prometheus', 'alerts.yml')]);
    assert.match(stdout, /SUCCESS: 7 rules found/);
  });

  it('passes the alerts\' rule tests (which alert fires when, with what labels and text)', async () => {
    const { stdout } = await run(PROMTOOL, ['test', 'rules', join(DEPLOY, 'prometheus', 'alerts.test.yml')]);
    assert.match(stdout, /SUCCESS/);
  });

  it('alerts only on metrics that fleetd exports', () => {
    const used = metricNames(readFileSync(join(DEPLOY, 'prometheus', 'alerts.yml'), 'utf8'));
    assert.ok(used.length >= 7, `the alerts name ${used.join(', ')}`);
    assert.deepEqual(used.filter((n) => !exposed.has(n)), []);
  });

  it('exports how many online agents can take each queued type, which FleetdNoCapableAgent watches', async () => {
    const capable = async () => {
      const text = (await server.api.get('/metrics')).body as string;
      return text.match(/^fleetd_queue_capable_agents\{type="video\.render"\} (\d+)$/m)?.[1];
    };
    await server.api.submit({ type: 'video.render', requires: ['gpu'] });
    assert.equal(await capable(), '0');
    await server.api.registerAgent(['cpu']);
    assert.equal(await capable(), '0');
    await server.api.registerAgent(['gpu', 'cpu']);
    assert.equal(await capable(), '1');
    const text = (await server.api.get('/metrics')).body as string;
    assert.match(text, /^fleetd_store_ready 1$/m);
  });

  it('has a Grafana dashboard whose every query names a metric that fleetd exports', () => {
    const dashboard = JSON.parse(readFileSync(join(DEPLOY, 'grafana', 'fleetd.json'), 'utf8'));
    const queries: string[] = dashboard.panels.flatMap((p: { targets: { expr: string }[] }) => p.targets.map((t) => t.expr));
    for (const v of dashboard.templating.list) queries.push(v.query.query);
    const used = metricNames(queries.join('\n'));
    assert.ok(used.length >= 10, `the dashboard names ${used.join(', ')}`);
    assert.deepEqual(used.filter((n) => !exposed.has(n)), []);
  });
});
