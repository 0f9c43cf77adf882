import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { PipelineSetup } from '../src/pipelines/pipelines.js';
import { finishedRun, startPipelineServer } from './fake-llm.js';
import { assertWireEvents, connect } from './ws-helpers.js';

const setup: PipelineSetup = {
  providers: [{ name: 'sim', kind: 'simulated', latency: { minMs: 1, maxMs: 5 }, dimensions: 8 }],
  functions: {
    words: (ctx) => String((ctx.input as { text: string }).text).split(/\s+/).length,
    shout: (ctx) => String((ctx.input as { text: string }).text).toUpperCase(),
    both: (ctx) => ({ words: ctx.steps.count, loud: ctx.steps.loud }),
  },
  pipelines: [
    {
      name: 'review',
      steps: [
        { name: 'summary', kind: 'llm', provider: 'sim', prompt: 'Summarise: {{input.text}}' },
        { name: 'vector', kind: 'embed', provider: 'sim', input: '{{steps.summary}}' },
        { name: 'check', kind: 'agent', capability: 'review', payload: { summary: '{{steps.summary}}' } },
      ],
    },
    {
      name: 'fan',
      steps: [
        { name: 'count', kind: 'code', fn: 'words', needs: [] },
        { name: 'loud', kind: 'code', fn: 'shout', needs: [] },
        { name: 'join', kind: 'code', fn: 'both', needs: ['count', 'loud'] },
      ],
    },
  ],
};

test('an agent step dispatches a task to an agent with the capability and the run waits for its result', async () => {
  const server = await startPipelineServer(setup);
  try {
    const agent = await server.api.registerAgent(['review']);
    const { body } = await server.api.post('/v1/pipelines/review/runs', { input: { text: 'the bins were not collected' } });
    const [task] = await server.api.claim(agent.id, 1, 10_000);
    assert.equal(task.type, 'review');
    assert.match(task.payload.summary, /the bins were not collected/);
    const midway = (await server.api.get(`/v1/pipelines/runs/${body.run.id}`)).body.run;
    assert.equal(midway.status, 'running');
    assert.equal(midway.steps[1].output.length, 8, 'the embed step recorded an 8-dimension vector');
    const done = await server.api.post(`/v1/tasks/${task.id}/complete`, { agentId: agent.id, result: { verdict: 'valid' } }, { authorization: `Bearer ${agent.token}` });
    assert.equal(done.status, 200, JSON.stringify(done.body));
    const run = await finishedRun(server.api, body.run.id);
    assert.equal(run.status, 'completed');
    assert.deepEqual(run.output, { verdict: 'valid' });
  } finally {
    await server.stop();
  }
});

test('parallel branches both run and the step that needs them sees both outputs', async () => {
  const server = await startPipelineServer(setup);
  try {
    const { body } = await server.api.post('/v1/pipelines/fan/runs', { input: { text: 'three small words' } });
    const run = await finishedRun(server.api, body.run.id);
    assert.equal(run.status, 'completed');
    assert.deepEqual(run.output, { words: 3, loud: 'THREE SMALL WORDS' });
  } finally {
    await server.stop();
  }
});

test('runs start once per idempotency key, in batches all or nothing, and list newest first by cursor', async () => {
  const server = await startPipelineServer(setup);
  try {
    const api = server.api;
    const first = await api.post('/v1/pipelines/fan/runs', { input: { text: 'a b' }, idempotencyKey: 'k1' });
    const again = await api.post('/v1/pipelines/fan/runs', { input: { text: 'a b' }, idempotencyKey: 'k1' });
    assert.equal(first.status, 201);
    assert.equal(again.status, 200);
    assert.equal(again.body.run.id, first.body.run.id);
    assert.equal(again.body.created, false);
    const conflict = await api.post('/v1/pipelines/fan/runs', { input: { text: 'other' }, idempotencyKey: 'k1' });
    assert.equal(conflict.status, 409);
    assert.equal(conflict.body.error.code, 'FLEETD_ERR_IDEMPOTENCY_CONFLICT');

    const batch = await api.post('/v1/pipelines/fan/runs/batch', { runs: [1, 2, 3, 4].map((n) => ({ input: { text: 'x '.repeat(n) } })) });
    assert.equal(batch.status, 201);
    assert.equal(batch.body.items.length, 4);
    const badBatch = await api.post('/v1/pipelines/fan/runs/batch', { runs: [{ input: 1 }, { input: 2, surprise: true }] });
    assert.equal(badBatch.status, 400);

    const seen: number[] = [];
    let cursor: string | null = null;
    do {
      const page: any = await api.get(`/v1/pipelines/runs?pipeline=fan&limit=2${cursor ? `&cursor=${cursor}` : ''}`);
      assert.equal(page.status, 200);
      seen.push(...page.body.items.map((r: any) => r.id));
      cursor = page.body.nextCursor;
    } while (cursor);
    assert.equal(seen.length, 5);
    assert.deepEqual(seen, [...seen].sort((a, b) => b - a));

    assert.equal((await api.post('/v1/pipelines/nope/runs', {})).body.error.code, 'FLEETD_ERR_NOT_FOUND');
    assert.equal((await api.get('/v1/pipelines/runs/999999')).status, 404);
    assert.equal((await api.get('/v1/pipelines/runs/abc')).status, 400);
    assert.equal((await api.get('/v1/pipelines/runs?status=sideways')).status, 400);
    assert.equal((await api.get('/v1/pipelines/runs?cursor=zzz')).status, 400);
    const listed = (await api.get('/v1/pipelines')).body.items.map((p: any) => p.name);
    assert.deepEqual(listed.sort(), ['fan', 'review']);
  } finally {
    await server.stop();
  }
});

test('observers of pipelines and of one run see its steps start and complete, then the run finish', async () => {
  const server = await startPipelineServer(setup, { eventBatchMs: 10 });
  try {
    const credential = { authorization: `Bearer ${server.api.key}` };
    const all = await connect(`${server.url}/v1/events`, credential);
    all.send({ type: 'subscribe', topics: ['pipelines'] });
    await all.next('subscribed');
    const { body } = await server.api.post('/v1/pipelines/review/runs', { input: { text: 'the bins were not collected' } });
    const id = body.run.id;
    const one = await connect(`${server.url}/v1/events`, credential);
    one.send({ type: 'subscribe', topics: [`run:${id}`] });
    await one.next('subscribed');
    // The run waits at its agent step until an agent completes the task.
    const agent = await server.api.registerAgent(['review']);
    const [task] = await server.api.claim(agent.id, 1, 10_000);
    await server.api.post(`/v1/tasks/${task.id}/complete`, { agentId: agent.id, result: { verdict: 'valid' } });
    await all.next('events', (m) => m.events.some((e: any) => e.name === 'pipeline.run.finished'));
    const events = all.events();
    assert.deepEqual(
      events.map((e: any) => [e.name, e.data.step, e.data.run.status]),
      [
        ['pipeline.run.created', undefined, 'queued'],
        ['pipeline.step.started', 'summary', 'running'],
        ['pipeline.step.completed', 'summary', 'running'],
        ['pipeline.step.started', 'vector', 'running'],
        ['pipeline.step.completed', 'vector', 'running'],
        ['pipeline.step.started', 'check', 'running'],
        ['pipeline.step.completed', 'check', 'running'],
        ['pipeline.run.finished', undefined, 'completed'],
      ],
    );
    assert.ok(events.every((e: any) => e.topic === 'pipelines' && e.data.run.id === id));
    assertWireEvents(events);
    // The run's own topic, subscribed while it ran, gets the rest of the same events.
    const finished = await one.next('events', (m) => m.events.some((e: any) => e.name === 'pipeline.run.finished'));
    assert.ok(finished.events.every((e: any) => e.topic === `run:${id}`));
    one.send({ type: 'subscribe', topics: ['run:0'] });
    assert.equal((await one.next('error')).error.code, 'FLEETD_ERR_VALIDATION');
    await Promise.all([all.close(), one.close()]);
  } finally {
    await server.stop();
  }
});
