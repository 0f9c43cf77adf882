import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { FakeLlm, finishedRun } from './fake-llm.js';
import { kill9, newAdminKey, startFleetdProcess, tempDir } from './helpers.js';

const fake = new FakeLlm();
before(() => fake.start());
after(() => fake.stop());

test('kill -9 of `fleetd start` with an API-defined pipeline waiting for an approval: after the restart the version and the wait are there, and the approval moves the run on', async () => {
  const dataDir = tempDir();
  const file = join(dataDir, 'pipelines.json');
  // The file brings the provider; the pipeline itself is defined over the API.
  writeFileSync(file, JSON.stringify({ providers: [{ name: 'fake', kind: 'openai', baseUrl: fake.url, limits: { retries: 0 } }], pipelines: [] }));
  const env = { FLEETD_PIPELINES_FILE: file, FLEETD_ADMIN_KEY: newAdminKey() };
  let server = await startFleetdProcess(dataDir, env);
  try {
    const defined = await server.api.request('PUT', '/v1/pipelines/refund', {
      steps: [
        { name: 'ok', kind: 'approval', prompt: 'Refund {{input.amount}}?', timeoutMs: 600_000 },
        { name: 'pay', kind: 'llm', provider: 'fake', prompt: 'APPROVED-PAY {{steps.ok.comment}}' },
      ],
    });
    assert.equal(defined.status, 201, JSON.stringify(defined.body));
    const id = (await server.api.post('/v1/pipelines/refund/runs', { input: { amount: 40 } })).body.run.id;
    let before: any;
    for (let i = 0; i < 250 && before?.steps[0].status !== 'waiting'; i++) {
      before = (await server.api.get(`/v1/pipelines/runs/${id}`)).body.run;
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(before.steps[0].status, 'waiting');
    await kill9(server.child);

    server = await startFleetdProcess(dataDir, env);
    const afterRestart = (await server.api.get(`/v1/pipelines/runs/${id}`)).body.run;
    assert.equal(afterRestart.steps[0].status, 'waiting');
    assert.equal(afterRestart.steps[0].approval.decideBy, before.steps[0].approval.decideBy);
    assert.equal(afterRestart.steps[0].approval.prompt, 'Refund 40?');
    assert.equal((await server.api.get('/v1/pipelines/refund')).body.pipeline.current.version, 1);
    const approved = await server.api.post(`/v1/pipelines/runs/${id}/steps/ok/approve`, { comment: 'ok by phone' });
    assert.equal(approved.status, 200, JSON.stringify(approved.body));
    const run = await finishedRun(server.api, id, 20_000);
    assert.equal(run.status, 'completed');
    assert.equal(run.output, 'reply to: APPROVED-PAY ok by phone');
    assert.equal(fake.seen('APPROVED-PAY').length, 1);
  } finally {
    await kill9(server.child);
    rmSync(dataDir, { recursive: true, force: true });
  }
});
