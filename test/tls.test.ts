import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { FleetClient } from '../packages/client/src/index.js';
import { runFleetd } from './cli-run.js';
import { startTestServer, tempDir, type TestServer } from './helpers.js';

/** A self-signed certificate for 127.0.0.1 and localhost, made by openssl in `dir`. */
export function selfSignedCertificate(dir: string, name = 'fleetd'): { cert: string; key: string } {
  const cert = join(dir, `${name}-cert.pem`);
  const key = join(dir, `${name}-key.pem`);
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
  ], { stdio: 'ignore' });
  return { cert, key };
}

describe('native TLS: HTTPS and WSS', () => {
  const dir = tempDir('fleetd-tls-');
  let server: TestServer;
  let tls: { cert: string; key: string };

  before(async () => {
    tls = selfSignedCertificate(dir);
    server = await startTestServer({ tlsCert: tls.cert, tlsKey: tls.key });
  });
  after(async () => {
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('listens on https://, sends HSTS, and a client that does not trust the certificate is refused', async () => {
    assert.match(server.url, /^https:\/\/127\.0\.0\.1:\d+$/);
    // Node's fetch trusts the system's authorities only: a self-signed certificate is refused.
    await assert.rejects(fetch(`${server.url}/healthz`), (err: Error & { cause?: { code?: string } }) => /SELF_SIGNED|self-signed/i.test(`${err.cause?.code} ${err.cause}`));
    const client = new FleetClient({ url: server.url, apiKey: server.adminKey, ca: readFileSync(tls.cert), retries: 0 });
    const stats = await client.stats();
    assert.equal(typeof stats.tasks, 'object');
    const untrusting = new FleetClient({ url: server.url, apiKey: server.adminKey, retries: 0 });
    await assert.rejects(untrusting.stats(), /cannot reach/);
    const health = await fetch(`${server.url}/healthz`, {}).catch(() => undefined);
    assert.equal(health, undefined);
    // Plain HTTP to the TLS port gets no API.
    await assert.rejects(fetch(`${server.url.replace('https', 'http')}/healthz`));
  });

  it('the TypeScript SDK submits over HTTPS, its agent works by WSS push, and its event stream arrives by WSS', async () => {
    const client = new FleetClient({ url: server.url, apiKey: server.adminKey, ca: readFileSync(tls.cert, 'utf8') });
    const events: string[] = [];
    const subscription = await client.subscribe(['queue:tls.echo'], (e) => events.push(e.name));
    const agent = client.agent({ name: 'tls-agent', capabilities: ['tls.echo'], transport: 'ws' });
    let transport: string | undefined;
    agent.on('connected', (c: { transport: string }) => (transport = c.transport));
    await agent.work((task) => ({ echoed: task.payload }));
    try {
      const { task } = await client.submit({ type: 'tls.echo', payload: { over: 'wss' } });
      let done = await client.get(task.id);
      const until = Date.now() + 20_000;
      while (done.status !== 'completed' && Date.now() < until) {
        await new Promise((r) => setTimeout(r, 50));
        done = await client.get(task.id);
      }
      assert.deepEqual(done.result, { echoed: { over: 'wss' } });
      assert.equal(transport, 'ws');
      const deadline = Date.now() + 5_000;
      while (!events.includes('task.completed') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      assert.ok(events.includes('task.created') && events.includes('task.completed'), events.join(','));
    } finally {
      subscription.close();
      await agent.stop();
    }
  });

  it('refuses to start with half a certificate, or files that are not one, naming the setting', async () => {
    const junk = join(dir, 'junk.pem');
    writeFileSync(junk, 'not a certificate');
    for (const [args, setting] of [
      [['--tls-cert', tls.cert], /tlsKey|FLEETD_TLS_KEY/],
      [['--tls-cert', join(dir, 'missing.pem'), '--tls-key', tls.key], /FLEETD_TLS_CERT: cannot read .*missing\.pem: ENOENT/],
      [['--tls-cert', junk, '--tls-key', tls.key], /FLEETD_TLS_CERT: .* not a PEM certificate/],
    ] as const) {
      const dataDir = tempDir();
      try {
        const res = await runFleetd(['start', '--port', '0', '--host', '127.0.0.1', '--data-dir', dataDir, ...args], { env: { ...process.env, FLEETD_ADMIN_KEY: '' } });
        assert.equal(res.code, 2, res.stderr);
        assert.match(res.stderr, setting);
      } finally {
        rmSync(dataDir, { recursive: true, force: true });
      }
    }
  });
});
