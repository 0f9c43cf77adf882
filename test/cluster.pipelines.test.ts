import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { FakeLlm, finishedRun, never } from './fake-llm.js';
import { tempDir } from './helpers.js';
import { clusterEnv, startNode, type NodeProcess } from './cluster/node-process.js';
import { dropSchema, } from './store/postgres.js';

const fake = new FakeLlm();
before(() => fake.start());
after(() => fake.stop());

test('two nodes on PostgreSQL: one drives a run; kill -9 it mid-step and the other resumes the run without repeating a finished step', { timeout: 90_000 }, async () => {
  const dir = tempDir();
  const file = join(dir, 'pipelines.json');
  writeFileSync(
    file,
    JSON.stringify({
      providers: [{ name: 'fake', kind: 'openai', baseUrl: fake.url, limits: { retries: 0 } }],
      pipelines: [
        {
          name: 'handover',
          steps: [
            { name: 'a', kind: 'llm', provider: 'fake', prompt: 'HANDOVER-A {{input.text}}' },
            { name: 'b', kind: 'llm', provider: 'fake', prompt: 'HANDOVER-B {{steps.a}}' },
            { name: 'c', kind: 'llm', provider: 'fake', prompt: 'HANDOVER-C {{steps.b}}' },
          ],
        },
      ],
    }),
  );
  // Step b's first call never answers: node A is driving it when it dies.
  fake.when('HANDOVER-B', { hold: never });
  const cluster = clusterEnv();
  const env = { ...cluster, FLEETD_PIPELINES_FILE: file, FLEETD_PIPELINE_RUN_LEASE_MS: '1500' };
  const nodes: NodeProcess[] = [];
  try {
    nodes.push(await startNode({ ...env, FLEETD_DATA_DIR: join(dir, 'a') }));
    nodes.push(await startNode({ ...env, FLEETD_DATA_DIR: join(dir, 'b') }));
    const [a, b] = nodes;
    const created = await a.api.post('/v1/pipelines/handover/runs', { input: { text: 'pothole' } });
    assert.equal(created.status, 201);
    const id = created.body.run.id;
    await fake.nextRequest('HANDOVER-B');
    // Several lease renewals go by: B sees the run (one store) but leaves it to A while A lives.
    await new Promise((r) => setTimeout(r, 2_000));
    const seenOnB = await b.api.get(`/v1/pipelines/runs/${id}`);
    assert.deepEqual(seenOnB.body.run.steps.map((s: { status: string }) => s.status), ['completed', 'running', 'pending']);
    assert.equal(fake.seen('HANDOVER-B').length, 1, 'only the node holding the run drives it');

    await a.kill();
    const run = await finishedRun(b.api, id, 30_000);
    assert.equal(run.status, 'completed');
    assert.equal(run.output, 'reply to: HANDOVER-C reply to: HANDOVER-B reply to: HANDOVER-A pothole');
    assert.equal(fake.seen('HANDOVER-A').length, 1, 'step a finished before the kill and never ran again');
    assert.equal(fake.seen('HANDOVER-B').length, 2, 'step b was in flight on A and ran again on B');
    assert.equal(fake.seen('HANDOVER-C').length, 1);
    assert.deepEqual(run.steps.map((s: { attempts: number }) => s.attempts), [1, 1, 1], 'B resumed the interrupted attempt');
  } finally {
    await Promise.all(nodes.map((n) => n.stop()));
    await dropSchema(cluster.FLEETD_DATABASE_SCHEMA);
    rmSync(dir, { recursive: true, force: true });
  }
});
