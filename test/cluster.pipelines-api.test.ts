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

async function twoNodes(body: (a: TestServer, b: TestServer) => Promise<void>): Promise<void> {
  const cluster: Partial<FleetdConfig> = {
    databaseUrl: TEST_DATABASE_URL,
    databaseSchema: uniqueSchema('fleetd_pipes'),
    redisUrl: TEST_REDIS_URL,
    redisPrefix: `fleetd-test-${randomBytes(4).toString('hex')}:`,
  };
  const nodes: TestServer[] = [];
  try {
    nodes.push(await startPipelineServer(setup, cluster));
    nodes.push(await startPipelineServer(setup, cluster));
    await body(nodes[0], nodes[1]);
  } finally {
    if (nodes[0]) await (nodes[0].driver as PostgresDriver).database.dropSchema();
    for (const n of nodes) await n.stop();
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
