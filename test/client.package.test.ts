import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import WebSocket from 'ws';
import { WIRE_FILES } from '../scripts/gen-client-wire.js';
import { FleetApiError, FleetClient } from '../src/client/index.js';
import { nextEvent, startTestServer, tempDir, type TestServer } from './helpers.js';

const root = join(import.meta.dirname, '..');
const packageDir = join(root, 'packages', 'client');
const npm = (args: string[], cwd: string) => execFileSync('npm', args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

describe('the @fleetd/client package', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(() => server.stop());

  it('has wire types in step with the server schemas (npm run gen:wire rewrites them)', () => {
    for (const [path, render] of WIRE_FILES) {
      assert.equal(readFileSync(join(root, path), 'utf8'), render(), `${path} is stale: run npm run gen:wire`);
    }
  });

  it('imports nothing of the server, and depends on ws alone', () => {
    const manifest = JSON.parse(readFileSync(join(packageDir, 'package.json'), 'utf8'));
    assert.deepEqual(Object.keys(manifest.dependencies), ['ws']);
    for (const file of readdirSync(join(packageDir, 'src'))) {
      const source = readFileSync(join(packageDir, 'src', file), 'utf8');
      for (const [, specifier] of source.matchAll(/from '([^']+)'/g)) {
        assert.ok(/^(\.\/[\w-]+\.js|node:\w+|ws)$/.test(specifier), `${file} imports ${specifier}`);
      }
    }
  });

  it('packs into a tarball that installs in an empty folder, with no build and no native code, and runs an agent', async () => {
    const folder = tempDir('fleetd-client-pack-');
    let agent: ReturnType<typeof spawn> | undefined;
    try {
      // The build already ran (npm test builds first). Its prepack build is not run again here: it would
      // rewrite packages/client/dist under every fleetd process the rest of the suite is starting,
      // which loads the SDK through the CLI, and one of them would read a half-written module.
      const [packed] = JSON.parse(npm(['pack', '--ignore-scripts', '--json', '--pack-destination', folder], packageDir)) as { filename: string; files: { path: string }[] }[];
      const files = packed.files.map((f) => f.path);
      assert.ok(files.includes('dist/index.js') && files.includes('dist/index.d.ts'), files.join(', '));
      assert.deepEqual(files.filter((f) => !/^(package\.json|dist\/[\w-]+\.(js|d\.ts))$/.test(f)), []);
      const app = join(folder, 'app');
      execFileSync('mkdir', [app]);
      writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
      // ws comes from the npm cache when it is there: the test needs no registry, only what any npm install had.
      npm(['install', '--prefer-offline', '--no-audit', '--no-fund', join(folder, packed.filename)], app);
      assert.deepEqual(readdirSync(join(app, 'node_modules')).filter((d) => !d.startsWith('.')).sort(), ['@fleetd', 'ws']);
      const native = execFileSync('find', [join(app, 'node_modules'), '-name', '*.node', '-o', '-name', 'binding.gyp'], { encoding: 'utf8' });
      assert.equal(native, '');
      writeFileSync(
        join(app, 'agent.js'),
        `import { FleetClient } from '@fleetd/client';
const client = new FleetClient({ url: process.env.FLEETD_URL, apiKey: process.env.FLEETD_API_KEY });
const agent = client.agent({ name: 'packed', capabilities: ['packed-echo'] });
await agent.work(async (task) => ({ echoed: task.payload }));
process.on('SIGTERM', () => agent.stop().then(() => process.exit(0)));
`,
      );
      const registered = nextEvent(server, 'agent.registered', (e) => e.agent.name === 'packed', 30_000);
      agent = spawn(process.execPath, ['agent.js'], { cwd: app, env: { ...process.env, FLEETD_URL: server.url, FLEETD_API_KEY: server.adminKey }, stdio: ['ignore', 'inherit', 'inherit'] });
      await registered;
      const completed = nextEvent(server, 'task.completed', (e) => e.task.type === 'packed-echo', 30_000);
      const task = await server.api.submit({ type: 'packed-echo', payload: 'from a tarball' });
      await completed;
      assert.deepEqual((await server.api.get(`/v1/tasks/${task.id}`)).body.result, { echoed: 'from a tarball' });
    } finally {
      agent?.kill('SIGKILL');
      rmSync(folder, { recursive: true, force: true });
    }
  });

  it('carries the catalogue status of an error that arrives over the agent socket, as HTTP would', async () => {
    const client = new FleetClient({ url: server.url, apiKey: server.adminKey });
    const { agent, token } = await client.registerAgent({ name: 'raw', capabilities: ['raw'] });
    const overHttp = await client.request('POST', '/v1/tasks/987654/complete', { agentId: agent.id }, { credential: token }).catch((err: unknown) => err);
    assert.ok(overHttp instanceof FleetApiError);
    const socket = new WebSocket(`${server.url.replace('http', 'ws')}/v1/agents/${agent.id}/stream`, { headers: { authorization: `Bearer ${token}` } });
    try {
      const answer = await new Promise<FleetApiError>((resolve, reject) => {
        socket.on('error', reject);
        socket.on('message', (data) => {
          const message = JSON.parse(data.toString());
          if (message.type === 'welcome') socket.send(JSON.stringify({ type: 'complete', id: 987654, ref: 1 }));
          if (message.type === 'error') resolve(FleetApiError.fromWire(message.error));
        });
      });
      assert.equal(answer.code, overHttp.code);
      assert.equal(answer.status, overHttp.status);
      assert.equal(answer.status, 404);
    } finally {
      socket.close();
    }
  });

  it('waits for a server that is not up yet, saying it retries, instead of failing', async () => {
    const port = await freePort();
    const client = new FleetClient({ url: `http://127.0.0.1:${port}`, apiKey: server.adminKey });
    const agent = client.agent({ name: 'early', capabilities: ['early'], reconnect: { minMs: 20, maxMs: 200 } });
    const said: string[] = [];
    let late: TestServer | undefined;
    try {
      const retrying = new Promise<void>((resolve) =>
        agent.on('error', (err: Error) => {
          said.push(err.message);
          if (/retrying in/.test(err.message)) resolve();
        }),
      );
      const working = agent.work(async () => 'late but done');
      await retrying;
      assert.match(said[0], new RegExp(`cannot reach http://127.0.0.1:${port} \\(ECONNREFUSED\\); retrying in \\d+\\.\\d s`));
      late = await startTestServer({ port, adminKey: server.adminKey });
      await working;
      const completed = nextEvent(late, 'task.completed', (e) => e.task.type === 'early', 10_000);
      await late.api.submit({ type: 'early' });
      assert.equal((await completed).task.agentId, agent.id);
      await agent.stop();
    } finally {
      await agent.stop();
      await late?.stop();
    }
  });
});

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}
