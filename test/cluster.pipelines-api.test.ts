import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import type { FleetdConfig } from '../src/config.js';
import type { PipelineSetup } from '../src/pipelines/pipelines.js';
import type { PostgresDriver } from '../src/store/postgres/driver.js';
import { TEST_REDIS_URL } from './cluster/node-process.js';
import { finishedRun, startPipelineServer } from './fake-llm.js';
import type { TestServer } from './helpers.js';
import { TEST_DATABASE_URL, uniqueSchema } from './store/postgres.js';

/**
 * Two nodes on one PostgreSQL schema and one Redis prefix, each a real server over HTTP: what one
 * node is told about pipelines defined over the API, and about approvals, the other acts on.
 */
const setup: PipelineSetup = { functions: { stepName: (ctx) => ctx.step.name } };

async function twoNodes(body: (a: TestServer, b: TestServer) => Promise<void>, settings: Partial<FleetdConfig> = {}): Promise<void> {
  const cluster: Partial<FleetdConfig> = {
    databaseUrl: TEST_DATABASE_URL,
    databaseSchema: uniqueSchema('fleetd_pipes'),
    redisUrl: TEST_REDIS_URL,
    redisPrefix: `fleetd-test-${randomBytes(4).toString('hex')}:`,
    ...settings,
  };
  const nodes: TestServer[] = [];
  try {
    nodes.push(await startPipelineServer(setup, cluster));
    nodes.push(await startPipelineServer(setup, cluster));
    await body(nodes[0], nodes[1]);
  } finally {
    try {
      if (nodes[0]) await (nodes[0].driver as PostgresDriver).database.dropSchema();
    } finally {
      for (const n of nodes) await n.stop();
    }
  }
}

test('two nodes on PostgreSQL and Redis: a version defined on one is the one the other starts runs with, and a deletion stops runs on both', { timeout: 60_000 }, async () => {
  await twoNodes(async (a, b) => {
    const one = (last: string) => ({ steps: [{ name: last, kind: 'code', fn: 'stepName' }] });
    assert.equal((await a.api.request('PUT', '/v1/pipelines/shared', one('v1'))).status, 201);
    const first = (await b.api.post('/v1/pipelines/shared/runs', {})).body.run;
    assert.equal((await finishedRun(b.api, first.id)).output, 'v1');
    assert.equal((await a.api.request('PUT', '/v1/pipelines/shared', one('v2'))).body.pipeline.version, 2);
    const second = (await b.api.post('/v1/pipelines/shared/runs', {})).body.run;
    assert.equal(second.pipelineVersion, 2, 'the node that did not store it starts with it at once');
    assert.equal((await finishedRun(b.api, second.id)).output, 'v2');
    assert.deepEqual((await b.api.get('/v1/pipelines')).body.items.map((p: any) => [p.name, p.version]), [['shared', 2]]);
    assert.equal((await b.api.delete('/v1/pipelines/shared')).status, 200);
    assert.equal((await a.api.post('/v1/pipelines/shared/runs', {})).status, 404);
  });
});

test('two nodes on PostgreSQL and Redis: an approval decided on the node not driving the run moves it on, and of decisions at once on both nodes one wins', { timeout: 60_000 }, async () => {
  await twoNodes(async (a, b) => {
    const definition = { steps: [{ name: 'ok', kind: 'approval', prompt: 'go?' }, { name: 'after', kind: 'code', fn: 'stepName' }] };
    assert.equal((await a.api.request('PUT', '/v1/pipelines/gate', definition)).status, 201);
    const waitingOn = async (id: number) => {
      for (let i = 0; i < 500; i++) {
        if ((await b.api.get(`/v1/pipelines/runs/${id}`)).body.run.steps[0].status === 'waiting') return;
        await new Promise((r) => setTimeout(r, 20));
      }
      throw new Error(`run ${id} never waited`);
    };
    // Runs started on A are driven by A; B decides.
    const remote = (await a.api.post('/v1/pipelines/gate/runs', {})).body.run;
    await waitingOn(remote.id);
    assert.equal((await b.api.post(`/v1/pipelines/runs/${remote.id}/steps/ok/approve`, { comment: 'from b' })).status, 200);
    const done = await finishedRun(a.api, remote.id, 20_000);
    assert.equal(done.status, 'completed');
    assert.equal(done.output, 'after');

    const runs = [];
    for (let i = 0; i < 5; i++) runs.push((await a.api.post('/v1/pipelines/gate/runs', {})).body.run);
    for (const run of runs) await waitingOn(run.id);
    for (const run of runs) {
      const path = `/v1/pipelines/runs/${run.id}/steps/ok`;
      const [onA, onB] = await Promise.all([a.api.post(`${path}/approve`, {}), b.api.post(`${path}/reject`, {})]);
      const statuses = [onA.status, onB.status].sort();
      assert.deepEqual(statuses, [200, 409], JSON.stringify([onA.body, onB.body]));
      const loser = onA.status === 409 ? onA : onB;
      assert.equal(loser.body.error.code, 'FLEETD_ERR_STEP_NOT_WAITING');
      const finished = await finishedRun(b.api, run.id, 20_000);
      assert.equal(finished.status, onA.status === 200 ? 'completed' : 'failed', 'the run followed the decision that won');
      assert.equal(finished.steps[0].output.decision, onA.status === 200 ? 'approved' : 'rejected');
    }
  });
});

test('two nodes sharing PostgreSQL but no bus: the node driving a run sees an approval given on the other at its next lease renewal', { timeout: 60_000 }, async () => {
  await twoNodes(
    async (a, b) => {
      await a.api.request('PUT', '/v1/pipelines/quiet', { steps: [{ name: 'ok', kind: 'approval', prompt: '?' }, { name: 'after', kind: 'code', fn: 'stepName' }] });
      const run = (await a.api.post('/v1/pipelines/quiet/runs', {})).body.run;
      for (let i = 0; i < 500 && (await b.api.get(`/v1/pipelines/runs/${run.id}`)).body.run.steps[0].status !== 'waiting'; i++) {
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.equal((await b.api.post(`/v1/pipelines/runs/${run.id}/steps/ok/approve`, {})).status, 200);
      const done = await finishedRun(b.api, run.id, 20_000);
      assert.equal(done.status, 'completed');
      assert.equal(done.output, 'after');
    },
    { redisUrl: '', pipelineRunLeaseMs: 1_500 },
  );
});

test('two nodes on PostgreSQL: runs of two namespaces whose pipelines share a name are taken over by the other node, each on its namespace\'s version', { timeout: 60_000 }, async () => {
  const cluster: Partial<FleetdConfig> = {
    databaseUrl: TEST_DATABASE_URL,
    databaseSchema: uniqueSchema('fleetd_pipes'),
    redisUrl: TEST_REDIS_URL,
    redisPrefix: `fleetd-test-${randomBytes(4).toString('hex')}:`,
    pipelineRunLeaseMs: 1_500,
  };
  const a = await startPipelineServer(setup, cluster);
  let b: TestServer | undefined;
  let aStopped = false;
  try {
    b = await startPipelineServer(setup, cluster);
    const runs: Record<string, any> = {};
    for (const namespace of ['team-a', 'team-b']) {
      const definition = { namespace, steps: [{ name: 'ok', kind: 'approval', prompt: '?' }, { name: `${namespace}-after`, kind: 'code', fn: 'stepName' }] };
      assert.equal((await a.api.request('PUT', '/v1/pipelines/shared', definition)).status, 201);
      runs[namespace] = (await a.api.post('/v1/pipelines/shared/runs', { namespace })).body.run;
    }
    for (const run of Object.values(runs)) {
      for (let i = 0; i < 500 && (await b.api.get(`/v1/pipelines/runs/${run.id}`)).body.run.steps[0].status !== 'waiting'; i++) {
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    // A leaves; B takes over both runs whatever their namespace, and drives each on its own version.
    await a.stop();
    aStopped = true;
    for (const [namespace, run] of Object.entries(runs)) {
      assert.equal((await b.api.post(`/v1/pipelines/runs/${run.id}/steps/ok/approve`, {})).status, 200);
      const done = await finishedRun(b.api, run.id, 20_000);
      assert.deepEqual([done.status, done.namespace, done.output], ['completed', namespace, `${namespace}-after`]);
    }
  } finally {
    // Dropped through a node still open: B once it started, else A.
    try {
      await ((b ?? a).driver as PostgresDriver).database.dropSchema();
    } finally {
      if (!aStopped) await a.stop();
      await b?.stop();
    }
  }
});
