import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { PipelineSetup } from '../src/pipelines/pipelines.js';
import { finishedRun, startPipelineServer } from './fake-llm.js';
import { eventually } from './helpers.js';

/** Runs whose input names a gate wait at their `hold` step until the test opens it. */
const gates = new Map<string, () => void>();
const opened = new Map<string, Promise<void>>();
const gate = (key: string) => {
  if (!opened.has(key)) opened.set(key, new Promise<void>((r) => gates.set(key, r)));
  return opened.get(key)!;
};
const setup: PipelineSetup = {
  providers: [{ name: 'sim', kind: 'simulated', latency: { minMs: 1, maxMs: 2 } }],
  functions: {
    hold: async (ctx) => {
      const key = (ctx.input as { gate?: string } | null)?.gate;
      if (key) await gate(key);
      return 'held';
    },
    stepName: (ctx) => ctx.step.name,
  },
  pipelines: [{ name: 'from-file', steps: [{ name: 'only', kind: 'code', fn: 'stepName' }] }],
};
const version = (last: string) => ({
  description: `ends with ${last}`,
  steps: [
    { name: 'wait', kind: 'code', fn: 'hold' },
    { name: last, kind: 'code', fn: 'stepName' },
  ],
});

test('a pipeline changed while runs of the old version are under way: they finish on their version, new runs take the new one', async () => {
  const server = await startPipelineServer(setup);
  try {
    const api = server.api;
    const v1 = await api.request('PUT', '/v1/pipelines/report', version('first'));
    assert.equal(v1.status, 201, JSON.stringify(v1.body));
    assert.equal(v1.body.pipeline.version, 1);
    const old = (await api.post('/v1/pipelines/report/runs', { input: { gate: 'old' } })).body.run;
    assert.equal(old.pipelineVersion, 1);
    await eventually(async () => (await api.get(`/v1/pipelines/runs/${old.id}`)).body.run.steps[0].status === 'running', 5_000, 'the v1 run to reach its held step');

    const v2 = await api.request('PUT', '/v1/pipelines/report', version('second'));
    assert.equal(v2.body.pipeline.version, 2);
    const fresh = (await api.post('/v1/pipelines/report/runs', { input: null })).body.run;
    assert.equal(fresh.pipelineVersion, 2);
    assert.deepEqual(fresh.steps.map((s: any) => s.name), ['wait', 'second']);
    assert.equal((await finishedRun(api, fresh.id)).output, 'second');

    gates.get('old')!();
    const finished = await finishedRun(api, old.id);
    assert.equal(finished.status, 'completed');
    assert.equal(finished.output, 'first', 'the old run finished with the definition it started with');
    assert.deepEqual(finished.steps.map((s: any) => s.name), ['wait', 'first']);

    const shown = (await api.get('/v1/pipelines/report')).body.pipeline;
    assert.equal(shown.current.version, 2);
    assert.equal(shown.current.source, 'api');
    assert.deepEqual(shown.current.steps.map((s: any) => s.name), ['wait', 'second']);
    assert.deepEqual(shown.versions.map((v: any) => [v.version, v.deleted, v.definition.description]), [[2, false, 'ends with second'], [1, false, 'ends with first']]);
    assert.equal((await api.get('/v1/pipelines/report/versions/1')).body.pipeline.definition.steps[1].name, 'first');
    assert.equal((await api.get('/v1/pipelines/report/versions/3')).status, 404);
    const listed = (await api.get('/v1/pipelines')).body.items.map((p: any) => [p.name, p.source, p.version]);
    assert.deepEqual(listed, [['from-file', 'file', null], ['report', 'api', 2]]);
  } finally {
    await server.stop();
  }
});

test('DELETE stops new runs while a run under way finishes; a later PUT defines the name anew', async () => {
  const server = await startPipelineServer(setup);
  try {
    const api = server.api;
    await api.request('PUT', '/v1/pipelines/gone', version('last'));
    const running = (await api.post('/v1/pipelines/gone/runs', { input: { gate: 'gone' } })).body.run;
    const deleted = await api.delete('/v1/pipelines/gone');
    assert.equal(deleted.status, 200);
    assert.deepEqual([deleted.body.pipeline.version, deleted.body.pipeline.deleted], [2, true]);
    const refused = await api.post('/v1/pipelines/gone/runs', {});
    assert.equal(refused.status, 404);
    assert.equal(refused.body.error.details.deletedIn, 2);
    assert.equal((await api.delete('/v1/pipelines/gone')).status, 404, 'deleted already');
    assert.deepEqual((await api.get('/v1/pipelines')).body.items.map((p: any) => p.name), ['from-file']);
    const shown = (await api.get('/v1/pipelines/gone')).body.pipeline;
    assert.equal(shown.current, null);
    assert.deepEqual(shown.versions.map((v: any) => v.version), [2, 1]);

    gates.get('gone')!();
    assert.equal((await finishedRun(api, running.id)).output, 'last', 'the run under way finished');
    const again = await api.request('PUT', '/v1/pipelines/gone', version('reborn'));
    assert.equal(again.body.pipeline.version, 3);
    const reborn = (await api.post('/v1/pipelines/gone/runs', {})).body.run;
    assert.equal((await finishedRun(api, reborn.id)).output, 'reborn');
  } finally {
    await server.stop();
  }
});

test('a run of an old version resumes on it after a restart, though a newer version is current', async () => {
  const first = await startPipelineServer(setup);
  let id: number;
  try {
    await first.api.request('PUT', '/v1/pipelines/resume', version('before'));
    id = (await first.api.post('/v1/pipelines/resume/runs', { input: { gate: 'never-opened' } })).body.run.id;
    await eventually(async () => (await first.api.get(`/v1/pipelines/runs/${id}`)).body.run.steps[0].status === 'running', 5_000, 'the run to start');
    await first.api.request('PUT', '/v1/pipelines/resume', { steps: [{ name: 'other', kind: 'code', fn: 'stepName' }] });
  } finally {
    await first.stop({ keepData: true });
  }
  const second = await startPipelineServer(setup, { dataDir: first.dataDir });
  try {
    // The step in flight at the stop runs again here, waiting on the same gate until it opens.
    gates.get('never-opened')!();
    const run = await finishedRun(second.api, id);
    assert.equal(run.status, 'completed');
    assert.equal(run.output, 'before');
    assert.equal(run.pipelineVersion, 1);
  } finally {
    await second.stop();
  }
});

test('a definition that does not validate is refused naming the pipeline, step and field, and stores nothing', async () => {
  const server = await startPipelineServer(setup);
  try {
    const api = server.api;
    const cases: [unknown, string | null, string][] = [
      [{ steps: [] }, null, 'steps'],
      [{}, null, 'steps'],
      [{ steps: [{ name: 'a', kind: 'llm', provider: 'nope', prompt: 'x' }] }, 'a', 'provider'],
      [{ steps: [{ name: 'a', kind: 'code', fn: 'unknown' }] }, 'a', 'fn'],
      [{ steps: [{ name: 'a', kind: 'teleport' }] }, 'a', 'kind'],
      [{ steps: [{ name: 'a', kind: 'code', fn: 'hold', needs: ['b'] }] }, 'a', 'needs'],
      [{ steps: [{ name: 'a', kind: 'http', url: 'ftp://x' }] }, 'a', 'url'],
      [{ steps: [{ name: 'a', kind: 'code', fn: 'hold', colour: 'red' }] }, 'a', 'colour'],
      [{ name: 'other', steps: [{ name: 'a', kind: 'code', fn: 'hold' }] }, null, 'name'],
      [{ surprise: 1, steps: [{ name: 'a', kind: 'code', fn: 'hold' }] }, null, 'surprise'],
      [{ steps: [{ name: 'ok', kind: 'approval' }] }, 'ok', 'prompt'],
      [{ steps: [{ name: 'ok', kind: 'approval', prompt: '?', onTimeout: 'shrug' }] }, 'ok', 'onTimeout'],
      [{ steps: [{ name: 'ok', kind: 'approval', prompt: '?', attempts: 3 }] }, 'ok', 'attempts'],
      [{ steps: [{ name: 'ok', kind: 'approval', prompt: '?', approvers: { keys: [] } }] }, 'ok', 'approvers'],
      [{ steps: [{ name: 'ok', kind: 'approval', prompt: '?', approvers: { people: ['x'] } }] }, 'ok', 'approvers.people'],
      [{ steps: [{ name: 'ok', kind: 'approval', prompt: '?', approvers: { agents: 'bot' } }] }, 'ok', 'approvers.agents'],
      [{ steps: [{ name: 'ok', kind: 'approval', prompt: '?', timeoutMs: 0 }] }, 'ok', 'timeoutMs'],
      [{ steps: Array.from({ length: 101 }, (_, i) => ({ name: `s${i}`, kind: 'code', fn: 'hold' })) }, null, 'steps'],
    ];
    for (const [body, step, field] of cases) {
      const res = await api.request('PUT', '/v1/pipelines/bad', body);
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.equal(res.body.error.code, 'FLEETD_ERR_PIPELINE_DEFINITION');
      assert.deepEqual(res.body.error.details, { pipeline: 'bad', step, field }, JSON.stringify(body));
      assert.match(res.body.error.message, /^pipeline bad/);
    }
    assert.equal((await api.request('PUT', '/v1/pipelines/runs', version('x'))).body.error.details.field, 'name');
    assert.equal((await api.request('PUT', '/v1/pipelines/bad', [1, 2])).body.error.code, 'FLEETD_ERR_VALIDATION');
    assert.equal((await api.request('PUT', '/v1/pipelines/bad%20name', version('x'))).status, 400);
    assert.equal((await api.get('/v1/pipelines/bad')).status, 404, 'nothing was stored');

    const fromFile = await api.request('PUT', '/v1/pipelines/from-file', version('x'));
    assert.equal(fromFile.status, 409);
    assert.equal(fromFile.body.error.code, 'FLEETD_ERR_PIPELINE_FROM_FILE');
    assert.equal((await api.delete('/v1/pipelines/from-file')).body.error.code, 'FLEETD_ERR_PIPELINE_FROM_FILE');
    assert.equal((await api.delete('/v1/pipelines/never-defined')).status, 404);
    const fileShown = (await api.get('/v1/pipelines/from-file')).body.pipeline;
    assert.deepEqual([fileShown.current.source, fileShown.current.version, fileShown.versions], ['file', null, []]);

    // Defining what the server calls is for admins: a submit key may run pipelines, not change them.
    const submitKey = (await api.post('/v1/keys', { name: 'ops', scope: 'submit' })).body.secret;
    const denied = await api.as(submitKey).request('PUT', '/v1/pipelines/mine', version('x'));
    assert.equal(denied.status, 403);
    assert.equal((await api.as(submitKey).delete('/v1/pipelines/from-file')).status, 403);
    assert.equal((await api.get('/v1/pipelines/mine')).status, 404);
  } finally {
    await server.stop();
  }
});

test('a version naming a function this node lacks is refused here with a clear error, not run', async () => {
  const first = await startPipelineServer({ ...setup, functions: { ...setup.functions, extra: () => 'extra' } });
  try {
    assert.equal((await first.api.request('PUT', '/v1/pipelines/special', { steps: [{ name: 'x', kind: 'code', fn: 'extra' }] })).status, 201);
    const deep = { steps: [{ name: 'a', kind: 'http', url: 'http://x', body: JSON.parse('['.repeat(200) + ']'.repeat(200)) }] };
    const tooDeep = await first.api.request('PUT', '/v1/pipelines/deep', deep);
    assert.deepEqual([tooDeep.status, tooDeep.body.error.code], [400, 'FLEETD_ERR_VALIDATION']);
  } finally {
    await first.stop({ keepData: true });
  }
  const second = await startPipelineServer(setup, { dataDir: first.dataDir });
  try {
    const refused = await second.api.post('/v1/pipelines/special/runs', {});
    assert.equal(refused.status, 409);
    assert.equal(refused.body.error.code, 'FLEETD_ERR_PIPELINE_UNRUNNABLE');
    assert.match(refused.body.error.message, /fn names no registered function/);
    assert.deepEqual((await second.api.get('/v1/pipelines')).body.items.map((p: any) => p.name), ['from-file']);
    assert.equal((await second.api.get('/v1/pipelines/special')).body.pipeline.versions.length, 1);
  } finally {
    await second.stop();
  }
});
