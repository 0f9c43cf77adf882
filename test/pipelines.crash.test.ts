import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { FakeLlm, finishedRun, never } from './fake-llm.js';
import { Api, newAdminKey, tempDir } from './helpers.js';

const fake = new FakeLlm();
const adminKey = newAdminKey();
before(() => fake.start());
after(() => fake.stop());

/** `fleetd start` in its own process, as an operator runs it; resolves once it listens. */
async function startProcess(dataDir: string, pipelinesFile: string): Promise<{ child: ChildProcess; api: Api }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'start'], {
    env: { ...process.env, FLEETD_PORT: '0', FLEETD_HOST: '127.0.0.1', FLEETD_DATA_DIR: dataDir, FLEETD_PIPELINES_FILE: pipelinesFile, FLEETD_LOG_LEVEL: 'info', FLEETD_ADMIN_KEY: adminKey },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  for await (const chunk of child.stdout!) {
    out += chunk;
    const url = /"url":"(http:[^"]+)"/.exec(out)?.[1];
    if (url) return { child, api: new Api(url, adminKey) };
  }
  throw new Error(`fleetd exited before listening: ${out}`);
}

async function crash(child: ChildProcess): Promise<void> {
  const exited = once(child, 'exit');
  child.kill('SIGKILL');
  await exited;
}

test('kill -9 mid-run, twice: the run resumes each time, no finished step repeats, the agent task is not dispatched again', async () => {
  const dataDir = tempDir();
  const file = join(dataDir, 'pipelines.json');
  writeFileSync(
    file,
    JSON.stringify({
      providers: [{ name: 'fake', kind: 'openai', baseUrl: fake.url, limits: { retries: 0 } }],
      pipelines: [
        {
          name: 'crashy',
          steps: [
            { name: 'a', kind: 'llm', provider: 'fake', prompt: 'CRASH-A {{input.text}}' },
            { name: 'review', kind: 'agent', capability: 'review', payload: { draft: '{{steps.a}}' } },
            { name: 'c', kind: 'llm', provider: 'fake', prompt: 'CRASH-C {{steps.review.verdict}}' },
          ],
        },
      ],
    }),
  );
  fake.when('CRASH-C', { hold: never });
  let server = await startProcess(dataDir, file);
  try {
    const agent = await server.api.registerAgent(['review']);
    const { body } = await server.api.post('/v1/pipelines/crashy/runs', { input: { text: 'pothole' } });
    const id = body.run.id;
    const [task] = await server.api.claim(agent.id, 1, 10_000);
    assert.equal(task.payload.draft, 'reply to: CRASH-A pothole');
    await crash(server.child);

    // The agent finishes its task on the restarted server; the resumed step takes that result.
    server = await startProcess(dataDir, file);
    const completed = await server.api.post(`/v1/tasks/${task.id}/complete`, { agentId: agent.id, result: { verdict: 'valid' } }, { authorization: `Bearer ${agent.token}` });
    assert.equal(completed.status, 200, JSON.stringify(completed.body));
    await fake.nextRequest('CRASH-C');
    await crash(server.child);

    server = await startProcess(dataDir, file);
    const run = await finishedRun(server.api, id);
    assert.equal(run.status, 'completed');
    assert.equal(run.output, 'reply to: CRASH-C valid');
    assert.equal(fake.seen('CRASH-A').length, 1, 'step a finished before the first crash and never ran again');
    assert.equal(fake.seen('CRASH-C').length, 2, 'step c was in flight at the second crash and ran again');
    const reviews = (await server.api.get('/v1/tasks?type=review')).body.items;
    assert.equal(reviews.length, 1, 'the agent step found its task again instead of dispatching another');
  } finally {
    if (server.child.exitCode === null) await crash(server.child);
    rmSync(dataDir, { recursive: true, force: true });
  }
});
