import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { PipelineSetup } from '../src/pipelines/pipelines.js';
import { FakeLlm, finishedRun, never, startPipelineServer } from './fake-llm.js';
import { nextEvent } from './helpers.js';

const fake = new FakeLlm();
before(() => fake.start());
after(() => fake.stop());

const setup = (steps: any[], defaults: Record<string, number> = {}): PipelineSetup => ({
  providers: [{ name: 'fake', kind: 'openai', baseUrl: fake.url, apiKeyEnv: 'FAKE_KEY', limits: { retries: 0 } }],
  pipelines: [{ name: 'chain', defaults: { backoffMs: 10, ...defaults }, steps }],
});

test('a restart mid-run resumes at the unfinished step and never repeats a finished one', async () => {
  fake.when('RESTART-B', { hold: never });
  const steps = [
    { name: 'a', kind: 'llm', provider: 'fake', prompt: 'RESTART-A {{input.text}}' },
    { name: 'b', kind: 'llm', provider: 'fake', prompt: 'RESTART-B {{steps.a}}' },
    { name: 'c', kind: 'llm', provider: 'fake', prompt: 'RESTART-C {{steps.b}}' },
  ];
  const first = await startPipelineServer(setup(steps));
  let id: number;
  try {
    const started = await first.api.post('/v1/pipelines/chain/runs', { input: { text: 'hello' } });
    assert.equal(started.status, 201);
    id = started.body.run.id;
    await fake.nextRequest('RESTART-B');
    const midway = (await first.api.get(`/v1/pipelines/runs/${id}`)).body.run;
    assert.deepEqual(midway.steps.map((s: any) => s.status), ['completed', 'running', 'pending']);
  } finally {
    await first.stop({ keepData: true });
  }

  const second = await startPipelineServer(setup(steps), { dataDir: first.dataDir });
  try {
    const run = await finishedRun(second.api, id);
    assert.equal(run.status, 'completed');
    assert.equal(fake.seen('RESTART-A').length, 1, 'the finished step a ran once');
    assert.equal(fake.seen('RESTART-B').length, 2, 'step b, in flight at the restart, ran again');
    assert.equal(fake.seen('RESTART-C').length, 1);
    assert.equal(run.output, 'reply to: RESTART-C reply to: RESTART-B reply to: RESTART-A hello');
    assert.deepEqual(run.steps.map((s: any) => s.status), ['completed', 'completed', 'completed']);
  } finally {
    await second.stop();
  }
});

test('a failed attempt is retried after the Retry-After the provider asked for, then succeeds', async () => {
  fake.when('RETRY-AFTER', { status: 429, headers: { 'retry-after': '1' } }, { status: 500 }, { body: '{"choices": [' });
  const server = await startPipelineServer(setup([{ name: 'ask', kind: 'llm', provider: 'fake', prompt: 'RETRY-AFTER', attempts: 4 }]));
  try {
    const { body } = await server.api.post('/v1/pipelines/chain/runs', { input: null });
    const run = await finishedRun(server.api, body.run.id);
    assert.equal(run.status, 'completed');
    assert.equal(run.steps[0].attempts, 4);
    const [first, second] = fake.seen('RETRY-AFTER');
    assert.ok(second.at - first.at >= 950, `the second attempt came ${second.at - first.at} ms after a 429 with Retry-After: 1`);
  } finally {
    await server.stop();
  }
});

test('a step that keeps timing out fails the run, recording the step and its error', async () => {
  fake.when('TIMEOUT', { hold: never }, { hold: never });
  const server = await startPipelineServer(
    setup([
      { name: 'slow', kind: 'llm', provider: 'fake', prompt: 'TIMEOUT', timeoutMs: 150, attempts: 2 },
      { name: 'after', kind: 'llm', provider: 'fake', prompt: 'NEVER-REACHED' },
    ]),
  );
  try {
    const { body } = await server.api.post('/v1/pipelines/chain/runs', {});
    const run = await finishedRun(server.api, body.run.id);
    assert.equal(run.status, 'failed');
    assert.equal(run.error.step, 'slow');
    assert.equal(run.error.error.kind, 'timeout');
    assert.deepEqual(run.steps.map((s: any) => [s.name, s.status, s.attempts]), [['slow', 'failed', 2], ['after', 'skipped', 0]]);
    assert.equal(fake.seen('NEVER-REACHED').length, 0);
  } finally {
    await server.stop();
  }
});

test('a non-retryable failure (400) fails the run at once, and the API key appears nowhere in it', async () => {
  fake.when('BAD-REQUEST', { status: 400 });
  const server = await startPipelineServer(setup([{ name: 'ask', kind: 'llm', provider: 'fake', prompt: 'BAD-REQUEST', attempts: 5 }]));
  try {
    const { body } = await server.api.post('/v1/pipelines/chain/runs', {});
    const run = await finishedRun(server.api, body.run.id);
    assert.equal(run.status, 'failed');
    assert.equal(run.steps[0].attempts, 1);
    assert.equal(run.error.error.status, 400);
    assert.equal(fake.seen('BAD-REQUEST')[0].authorization, 'Bearer sk-secret-123');
    assert.ok(!JSON.stringify(run).includes('sk-secret-123'));
  } finally {
    await server.stop();
  }
});

test('cancelling a run stops it: the step in flight is abandoned and no later step starts', async () => {
  let release!: () => void;
  fake.when('CANCEL-ME', { hold: new Promise<void>((r) => (release = r)) });
  const server = await startPipelineServer(
    setup([
      { name: 'held', kind: 'llm', provider: 'fake', prompt: 'CANCEL-ME' },
      { name: 'next', kind: 'llm', provider: 'fake', prompt: 'AFTER-CANCEL' },
    ]),
  );
  try {
    const { body } = await server.api.post('/v1/pipelines/chain/runs', {});
    await fake.nextRequest('CANCEL-ME');
    const cancelled = await server.api.post(`/v1/pipelines/runs/${body.run.id}/cancel`);
    assert.equal(cancelled.status, 200);
    assert.equal(cancelled.body.run.status, 'cancelled');
    assert.deepEqual(cancelled.body.run.steps.map((s: any) => s.status), ['cancelled', 'cancelled']);
    release();
    const again = await server.api.post(`/v1/pipelines/runs/${body.run.id}/cancel`);
    assert.equal(again.status, 409);
    assert.equal(again.body.error.code, 'FLEETD_ERR_RUN_STATE');
    // A run started after it goes through the whole pipeline, so the cancelled one had its chance to (wrongly) go on.
    const later = await server.api.post('/v1/pipelines/chain/runs', {});
    const finished = nextEvent(server, 'pipeline.run.finished', (e) => e.run.id === later.body.run.id);
    await finished;
    assert.equal(fake.seen('AFTER-CANCEL').length, 1);
    assert.equal((await server.api.get(`/v1/pipelines/runs/${body.run.id}`)).body.run.status, 'cancelled');
  } finally {
    await server.stop();
  }
});

test('an http step calls any URL with a templated body, retrying a 503 after its Retry-After', async () => {
  fake.when('HTTP-STEP', { status: 503, headers: { 'retry-after': '0' } });
  const server = await startPipelineServer(
    setup([
      {
        name: 'call',
        kind: 'http',
        url: `${fake.url}/anything`,
        method: 'POST',
        headers: { 'x-run': '{{run.id}}' },
        body: { messages: [{ role: 'user', content: 'HTTP-STEP {{input.text}}' }] },
      },
    ]),
  );
  try {
    const { body } = await server.api.post('/v1/pipelines/chain/runs', { input: { text: 'ping' } });
    const run = await finishedRun(server.api, body.run.id);
    assert.equal(run.status, 'completed');
    assert.equal(run.steps[0].attempts, 2);
    assert.equal(run.output.choices[0].message.content, 'reply to: HTTP-STEP ping');
    assert.equal(fake.seen('HTTP-STEP')[1].path, '/v1/anything');
  } finally {
    await server.stop();
  }
});
