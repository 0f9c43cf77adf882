import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { FakeLlm, finishedRun, never } from './fake-llm.js';
import { kill9, newAdminKey, startFleetdProcess, tempDir } from './helpers.js';

const fake = new FakeLlm();
const adminKey = newAdminKey();
before(() => fake.start());
after(() => fake.stop());

/** `fleetd start` in its own process, as an operator runs it, with the pipelines in `pipelinesFile`. */
const startProcess = (dataDir: string, pipelinesFile: string) =>
  startFleetdProcess(dataDir, { FLEETD_PIPELINES_FILE: pipelinesFile, FLEETD_ADMIN_KEY: adminKey });

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
    await kill9(server.child);

    // The agent finishes its task on the restarted server; the resumed step takes that result.
    server = await startProcess(dataDir, file);
    const completed = await server.api.post(`/v1/tasks/${task.id}/complete`, { agentId: agent.id, result: { verdict: 'valid' } }, { authorization: `Bearer ${agent.token}` });
    assert.equal(completed.status, 200, JSON.stringify(completed.body));
    await fake.nextRequest('CRASH-C');
    await kill9(server.child);

    server = await startProcess(dataDir, file);
    const run = await finishedRun(server.api, id);
    assert.equal(run.status, 'completed');
    assert.equal(run.output, 'reply to: CRASH-C valid');
    assert.equal(fake.seen('CRASH-A').length, 1, 'step a finished before the first crash and never ran again');
    assert.equal(fake.seen('CRASH-C').length, 2, 'step c was in flight at the second crash and ran again');
    const reviews = (await server.api.get('/v1/tasks?type=review')).body.items;
    assert.equal(reviews.length, 1, 'the agent step found its task again instead of dispatching another');
  } finally {
    if (server.child.exitCode === null) await kill9(server.child);
    rmSync(dataDir, { recursive: true, force: true });
  }
});
