import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadPipelinesFile } from '../src/pipelines/load.js';
import { finishedRun, startPipelineServer } from './fake-llm.js';

test('the complaints example runs end to end and groups alike complaints into one case', async () => {
  const example = loadPipelinesFile('examples/complaints/pipelines.yaml');
  // The example's own pipeline, on the same simulated provider made fast and reliable for a test.
  const providers = example.providers.map((p) => ({ ...p, latency: { minMs: 1, maxMs: 5 }, failureRate: 0 }));
  const server = await startPipelineServer({ providers: providers as any, pipelines: example.pipelines });
  try {
    const texts = [
      'The bins on Elm Street were not collected for three weeks',
      'Bins on Elm Street not collected for three weeks now',
      'Loud construction noise every night at the harbour after midnight',
    ];
    const started = await server.api.post('/v1/pipelines/complaint/runs/batch', { runs: texts.map((text) => ({ input: { text } })) });
    assert.equal(started.status, 201);
    const runs = [];
    for (const item of started.body.items) runs.push(await finishedRun(server.api, item.run.id));
    for (const run of runs) assert.equal(run.status, 'completed', JSON.stringify(run.error));
    assert.deepEqual(runs[0].steps.map((s: any) => s.name), ['intake', 'extract', 'classify', 'sector', 'summarise', 'embed', 'group']);
    const [a, b, c] = runs.map((r) => r.output.caseId);
    assert.equal(a, b, 'the two bin complaints share a case');
    assert.notEqual(a, c, 'the noise complaint has its own');

    const cases = (await server.api.get('/v1/cases')).body;
    assert.equal(cases.items.length, 2);
    const bins = (await server.api.get(`/v1/cases/${a}`)).body.case;
    assert.equal(bins.size, 2);
    assert.deepEqual(bins.members.map((m: any) => m.runId).sort(), [runs[0].id, runs[1].id].sort());
    assert.equal((await server.api.get('/v1/cases/424242')).status, 404);
  } finally {
    await server.stop();
  }
});

test('the complaints example classifies by what a complaint is about and groups the same complaint in other words into one case', async () => {
  const example = loadPipelinesFile('examples/complaints/pipelines.yaml');
  const providers = example.providers.map((p) => ({ ...p, latency: { minMs: 1, maxMs: 5 }, failureRate: 0 }));
  const server = await startPipelineServer({ providers: providers as any, pipelines: example.pipelines });
  try {
    const texts = [
      'The streetlight on Elm Street has been out for a week.',
      'Streetlight out on Elm Street since last week, the road is dark at night.',
      'Street light broken at Elm St, dark for a week now.',
      'The bins on Elm Street were not collected on Monday.',
    ];
    const started = await server.api.post('/v1/pipelines/complaint/runs/batch', { runs: texts.map((text) => ({ input: { text } })) });
    assert.equal(started.status, 201);
    const runs = [];
    for (const item of started.body.items) runs.push(await finishedRun(server.api, item.run.id));
    for (const run of runs) assert.equal(run.status, 'completed', JSON.stringify(run.error));
    const classified = runs.map((r) => String(r.steps.find((s: any) => s.name === 'classify').output).split(':')[0]);
    assert.deepEqual(classified, ['safety', 'safety', 'safety', 'service']);
    const [a, b, c, bins] = runs.map((r) => r.output.caseId);
    assert.equal(b, a, 'the second streetlight complaint joins the first one\'s case');
    assert.equal(c, a, 'so does the third');
    assert.notEqual(bins, a, 'the bins on the same street are another case');
    assert.equal((await server.api.get(`/v1/cases/${a}`)).body.case.size, 3);
  } finally {
    await server.stop();
  }
});
