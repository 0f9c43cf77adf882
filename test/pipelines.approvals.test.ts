import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { PipelineSetup } from '../src/pipelines/pipelines.js';
import { finishedRun, startPipelineServer } from './fake-llm.js';
import { type Api, eventually, type TestServer, withServer } from './helpers.js';
import { assertWireEvents, connect } from './ws-helpers.js';

const setup: PipelineSetup = {
  functions: {
    build: () => 'built',
    ship: (ctx) => ({ shipped: true, approval: ctx.steps.ok }),
    work: () => 'worked',
  },
  pipelines: [
    {
      name: 'release',
      steps: [
        { name: 'build', kind: 'code', fn: 'build' },
        { name: 'ok', kind: 'approval', prompt: 'Ship {{input.version}}? The build says: {{steps.build}}', timeoutMs: 600_000 },
        { name: 'ship', kind: 'code', fn: 'ship' },
      ],
    },
    {
      name: 'named',
      steps: [{ name: 'ok', kind: 'approval', prompt: 'Refund?', approvers: { keys: ['lead'], agents: ['release-bot'] } }],
    },
    { name: 'lapse-approve', steps: [{ name: 'ok', kind: 'approval', prompt: 'quiet?', timeoutMs: 300, onTimeout: 'approve' }] },
    { name: 'lapse-reject', steps: [{ name: 'ok', kind: 'approval', prompt: 'quiet?', timeoutMs: 300 }] },
    { name: 'work', steps: [{ name: 'w', kind: 'code', fn: 'work' }] },
  ],
};

/** Starts a run and waits until its step `step` waits for a decision; returns the run. */
async function waitingRun(api: Api, pipeline: string, input: unknown = null, step = 'ok'): Promise<any> {
  const { body } = await api.post(`/v1/pipelines/${pipeline}/runs`, { input });
  let run: any;
  await eventually(async () => {
    run = (await api.get(`/v1/pipelines/runs/${body.run.id}`)).body.run;
    return run.steps.find((s: any) => s.name === step).status === 'waiting';
  }, 10_000, `run ${body.run.id} to wait at ${step}`);
  return run;
}

/** A pipeline server for `body`, stopped after it (see helpers' withServer). */
const withPipelineServer = (body: (server: TestServer) => Promise<void>, overrides = {}) =>
  withServer(overrides, body, (config) => startPipelineServer(setup, config));

test('an approval waits with its prompt until a submit key approves it; the decision, who and the comment are its output', async () => {
  await withPipelineServer(async ({ api }) => {
    const submit = api.as((await api.post('/v1/keys', { name: 'ops', scope: 'submit' })).body.secret);
    const run = await waitingRun(api, 'release', { version: '1.4' });
    const ok = run.steps[1];
    assert.equal(run.status, 'running');
    assert.equal(ok.approval.prompt, 'Ship 1.4? The build says: built');
    assert.equal(ok.approval.onTimeout, 'reject');
    assert.equal(ok.approval.approvers, null);
    const decideBy = Date.parse(ok.approval.decideBy) - Date.parse(ok.startedAt);
    assert.ok(Math.abs(decideBy - 600_000) < 1_000, `decideBy is timeoutMs after the start (${decideBy})`);
    assert.equal(run.steps[2].status, 'pending');
    assert.deepEqual((await submit.get(`/v1/pipelines/runs/${run.id}/steps/ok/approval`)).body, { waiting: true, mayDecide: true });

    const approved = await submit.post(`/v1/pipelines/runs/${run.id}/steps/ok/approve`, { comment: 'numbers checked' });
    assert.equal(approved.status, 200, JSON.stringify(approved.body));
    const output = approved.body.run.steps[1].output;
    assert.equal(output.decision, 'approved');
    assert.equal(output.comment, 'numbers checked');
    assert.equal(output.by.kind, 'key');
    assert.equal(output.by.name, 'ops');
    assert.ok(!Number.isNaN(Date.parse(output.decidedAt)));
    const done = await finishedRun(api, run.id);
    assert.equal(done.status, 'completed');
    assert.deepEqual(done.output, { shipped: true, approval: output }, 'the next step saw the decision');

    const again = await submit.post(`/v1/pipelines/runs/${run.id}/steps/ok/reject`, {});
    assert.equal(again.status, 409);
    assert.equal(again.body.error.code, 'FLEETD_ERR_STEP_NOT_WAITING');
    assert.equal(again.body.error.details.status, 'completed');
  });
});

test('a rejection fails the step and the run; decisions that cannot be made are refused and change nothing', async () => {
  await withPipelineServer(async ({ api }) => {
    const reader = api.as((await api.post('/v1/keys', { name: 'watcher', scope: 'read' })).body.secret);
    const agent = await api.registerAgent(['x']);
    const run = await waitingRun(api, 'release', { version: '2.0' });
    const path = `/v1/pipelines/runs/${run.id}/steps`;
    const refusals: [Promise<any>, number, string][] = [
      [reader.post(`${path}/ok/approve`, {}), 403, 'FLEETD_ERR_FORBIDDEN'],
      [api.as(agent.token).post(`${path}/ok/approve`, {}), 403, 'FLEETD_ERR_FORBIDDEN'],
      [api.post(`${path}/ship/approve`, {}), 409, 'FLEETD_ERR_STEP_NOT_WAITING'],
      [api.post(`${path}/build/approve`, {}), 409, 'FLEETD_ERR_STEP_NOT_WAITING'],
      [api.post(`${path}/nope/approve`, {}), 404, 'FLEETD_ERR_NOT_FOUND'],
      [api.post('/v1/pipelines/runs/999999/steps/ok/approve', {}), 404, 'FLEETD_ERR_NOT_FOUND'],
      [api.post(`${path}/ok/approve`, { comment: 'x', extra: 1 }), 400, 'FLEETD_ERR_VALIDATION'],
      [api.post(`${path}/ok/approve`, { comment: 'x'.repeat(2_001) }), 400, 'FLEETD_ERR_VALIDATION'],
      [api.post(`${path}/ok/approve`, { comment: 5 }), 400, 'FLEETD_ERR_VALIDATION'],
      [api.post(`/v1/pipelines/runs/abc/steps/ok/approve`, {}), 400, 'FLEETD_ERR_VALIDATION'],
    ];
    for (const [reply, status, code] of refusals) {
      const res = await reply;
      assert.deepEqual([res.status, res.body.error.code], [status, code], JSON.stringify(res.body));
    }
    assert.equal((await api.get(`/v1/pipelines/runs/${run.id}`)).body.run.steps[1].status, 'waiting', 'nothing changed');
    assert.deepEqual((await reader.get(`${path}/ok/approval`)).body, { waiting: true, mayDecide: false });
    assert.deepEqual((await api.get(`${path}/ok/approval`)).body, { waiting: true, mayDecide: true });
    assert.deepEqual((await api.get(`${path}/build/approval`)).body, { waiting: false, mayDecide: false });

    // No body at all is a decision without a comment.
    const rejected = await api.request('POST', `${path}/ok/reject`);
    assert.equal(rejected.status, 200, JSON.stringify(rejected.body));
    const failed = rejected.body.run;
    assert.equal(failed.status, 'failed');
    assert.deepEqual(failed.steps.map((s: any) => s.status), ['completed', 'failed', 'skipped']);
    assert.equal(failed.steps[1].output.decision, 'rejected');
    assert.equal(failed.steps[1].output.comment, null);
    assert.equal(failed.error.step, 'ok');
    assert.equal(failed.error.error.decision, 'rejected');
    assert.equal((await api.post(`${path}/ok/approve`, {})).body.error.code, 'FLEETD_ERR_STEP_NOT_WAITING');
  });
});

test('a step naming who may decide: those keys and agents may, other submit keys and agents may not, admin keys always may', async () => {
  await withPipelineServer(async ({ api }) => {
    const lead = api.as((await api.post('/v1/keys', { name: 'lead', scope: 'submit' })).body.secret);
    const other = api.as((await api.post('/v1/keys', { name: 'someone', scope: 'submit' })).body.secret);
    const bot = await api.post('/v1/agents', { name: 'release-bot', capabilities: ['x'] });
    const stranger = await api.registerAgent(['x']);
    const [a, b, c] = [await waitingRun(api, 'named'), await waitingRun(api, 'named'), await waitingRun(api, 'named')];
    assert.deepEqual(a.steps[0].approval.approvers, { keys: ['lead'], agents: ['release-bot'] });
    assert.equal((await other.post(`/v1/pipelines/runs/${a.id}/steps/ok/approve`, {})).status, 403);
    assert.equal((await api.as(stranger.token).post(`/v1/pipelines/runs/${a.id}/steps/ok/approve`, {})).status, 403);
    const byLead = await lead.post(`/v1/pipelines/runs/${a.id}/steps/ok/approve`, {});
    assert.equal(byLead.body.run.steps[0].output.by.name, 'lead');
    const byBot = await api.as(bot.body.token).post(`/v1/pipelines/runs/${b.id}/steps/ok/reject`, { comment: 'amount too high' });
    assert.equal(byBot.status, 200, JSON.stringify(byBot.body));
    assert.deepEqual(byBot.body.run.steps[0].output.by, { kind: 'agent', id: bot.body.agent.id, name: 'release-bot' });
    assert.equal((await api.post(`/v1/pipelines/runs/${c.id}/steps/ok/approve`, {})).status, 200, 'an admin key');
    assert.equal((await finishedRun(api, a.id)).status, 'completed');
    assert.equal((await finishedRun(api, b.id)).status, 'failed');
  });
});

test('an approval nobody decides in time decides itself as onTimeout says', async () => {
  await withPipelineServer(async ({ api }) => {
    const [approving, rejecting] = await Promise.all([api.post('/v1/pipelines/lapse-approve/runs', {}), api.post('/v1/pipelines/lapse-reject/runs', {})]);
    const approved = await finishedRun(api, approving.body.run.id);
    assert.equal(approved.status, 'completed');
    assert.equal(approved.output.decision, 'approved');
    assert.deepEqual(approved.output.by, { kind: 'timeout' });
    const rejected = await finishedRun(api, rejecting.body.run.id);
    assert.equal(rejected.status, 'failed');
    assert.deepEqual(rejected.error.error.by, { kind: 'timeout' });
    assert.equal((await api.post(`/v1/pipelines/runs/${approving.body.run.id}/steps/ok/reject`, {})).status, 409);
  });
});

test('waiting approvals hold no slot of the background lane', async () => {
  await withPipelineServer(
    async ({ api }) => {
      const waiting = [await waitingRun(api, 'release'), await waitingRun(api, 'release'), await waitingRun(api, 'release')];
      const work = (await api.post('/v1/pipelines/work/runs', {})).body.run;
      assert.equal((await finishedRun(api, work.id)).output, 'worked', 'a lane of one slot still ran work beside three waiting approvals');
      assert.equal((await api.get('/v1/pipelines/stats')).body.lane.stepsRunning, 0);
      for (const run of waiting) assert.equal((await api.get(`/v1/pipelines/runs/${run.id}`)).body.run.steps[1].status, 'waiting');
    },
    { pipelineConcurrency: 1 },
  );
});

test('an approval survives a restart: still waiting with its deadline, decided after it; one whose time ran out while down decides itself', async () => {
  const first = await startPipelineServer(setup);
  let waiting: any;
  let lapsing: number;
  try {
    waiting = await waitingRun(first.api, 'release', { version: '3' });
    lapsing = (await waitingRun(first.api, 'lapse-approve')).id;
  } finally {
    await first.stop({ keepData: true });
  }
  await new Promise((r) => setTimeout(r, 400));
  const second = await startPipelineServer(setup, { dataDir: first.dataDir });
  try {
    const lapsed = await finishedRun(second.api, lapsing);
    assert.deepEqual([lapsed.status, lapsed.output.by.kind], ['completed', 'timeout']);
    const after = (await second.api.get(`/v1/pipelines/runs/${waiting.id}`)).body.run.steps[1];
    assert.equal(after.status, 'waiting');
    assert.equal(after.approval.decideBy, waiting.steps[1].approval.decideBy, 'the deadline did not move');
    assert.equal(after.attempts, 1);
    const res = await second.api.post(`/v1/pipelines/runs/${waiting.id}/steps/ok/approve`, { comment: 'after the restart' });
    assert.equal(res.status, 200);
    assert.equal((await finishedRun(second.api, waiting.id)).status, 'completed');
  } finally {
    await second.stop();
  }
});

test('observers see an approval step wait, then be decided, in the stream’s wire shapes', async () => {
  await withPipelineServer(async (server) => {
    const { api } = server;
    const observer = await connect(`${server.url}/v1/events`, { authorization: `Bearer ${api.key}` });
    try {
      observer.send({ type: 'subscribe', topics: ['pipelines'] });
      await observer.next('subscribed');
      const run = await waitingRun(api, 'named');
      await api.post(`/v1/pipelines/runs/${run.id}/steps/ok/approve`, {});
      await observer.next('events', (m) => m.events.some((e: any) => e.name === 'pipeline.run.finished'));
      const events = observer.events();
      assert.deepEqual(
        events.map((e: any) => [e.name, e.data.step, e.data.run.status]),
        [
          ['pipeline.run.created', undefined, 'queued'],
          ['pipeline.step.waiting', 'ok', 'running'],
          ['pipeline.step.completed', 'ok', 'running'],
          ['pipeline.run.finished', undefined, 'completed'],
        ],
      );
      assertWireEvents(events);
    } finally {
      await observer.close();
    }
  }, { eventBatchMs: 10 });
});
