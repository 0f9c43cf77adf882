import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { PipelineSetup } from '../src/pipelines/pipelines.js';
import { FakeLlm, finishedRun, startPipelineServer } from './fake-llm.js';
import { type Api, eventually, type TestServer } from './helpers.js';
import { connect, type Peer } from './ws-helpers.js';

/**
 * Pipelines, runs, cases and approvals in namespaces, over real HTTP: two teams define `triage`
 * each their own way and run it; each sees its own runs, cases and definitions, and the other's
 * answer 404 as if they did not exist. The file's pipelines are in every namespace.
 */
const fake = new FakeLlm();

const setup = (): PipelineSetup => ({
  providers: [{ name: 'fake', kind: 'openai', baseUrl: fake.url, apiKeyEnv: 'FAKE_KEY', limits: { retries: 0 } }],
  functions: { where: (ctx) => ctx.run.namespace },
  pipelines: [
    { name: 'hello', steps: [{ name: 'where', kind: 'code', fn: 'where' }] },
    { name: 'dispatch', steps: [{ name: 'work', kind: 'agent', capability: 'work' }] },
    { name: 'signoff', steps: [{ name: 'ok', kind: 'approval', prompt: 'Ship?', approvers: { agents: ['bot'] }, timeoutMs: 600_000 }] },
  ],
});

/** Two namespaces' `triage`: different steps, both ending by grouping the run's text into a case. */
const triageOf = (namespace: string) => ({
  namespace,
  description: `${namespace}'s triage`,
  steps: [
    namespace === 'team-a'
      ? { name: 'summary', kind: 'llm', provider: 'fake', prompt: 'TEAM-A {{input.text}}' }
      : { name: 'where', kind: 'code', fn: 'where' },
    // The fake embeds a text by its length: the same text in both namespaces gets the same vector.
    { name: 'vector', kind: 'embed', provider: 'fake', input: '{{input.text}}' },
    { name: 'group', kind: 'code', fn: 'group-into-case', needs: ['vector'] },
  ],
});

/** Starts a run and waits for it to finish; returns it. */
async function ran(api: Api, pipeline: string, body: Record<string, unknown>): Promise<any> {
  const started = await api.post(`/v1/pipelines/${pipeline}/runs`, body);
  assert.equal(started.status, 201, JSON.stringify(started.body));
  return finishedRun(api, started.body.run.id);
}

describe('pipelines in namespaces', () => {
  let server: TestServer;
  let api: Api;
  let a: any;
  let b: any;

  before(async () => {
    await fake.start();
    server = await startPipelineServer(setup());
    api = server.api;
    for (const namespace of ['team-a', 'team-b']) {
      const defined = await api.request('PUT', '/v1/pipelines/triage', triageOf(namespace));
      assert.equal(defined.status, 201, JSON.stringify(defined.body));
      assert.deepEqual([defined.body.pipeline.namespace, defined.body.pipeline.version], [namespace, 1], 'each namespace numbers its own versions');
      assert.equal(defined.body.pipeline.definition.namespace, undefined, 'the namespace is where it goes, not part of the definition');
    }
    a = await ran(api, 'triage', { namespace: 'team-a', input: { text: 'bins on Elm Street' } });
    b = await ran(api, 'triage', { namespace: 'team-b', input: { text: 'bins on Elm Street' } });
  });

  after(async () => {
    await server?.stop();
    await fake.stop();
  });

  it("runs each namespace's own definition of a name, in that namespace, and groups its runs into its own cases", async () => {
    assert.deepEqual([a.status, a.namespace, a.pipelineVersion], ['completed', 'team-a', 1], JSON.stringify(a.error));
    assert.deepEqual([b.status, b.namespace, b.pipelineVersion], ['completed', 'team-b', 1], JSON.stringify(b.error));
    assert.deepEqual(a.steps.map((s: any) => s.name), ['summary', 'vector', 'group']);
    assert.deepEqual(b.steps.map((s: any) => s.name), ['where', 'vector', 'group']);
    assert.equal(b.steps[0].output, 'team-b', "a step sees its run's namespace");
    assert.equal(fake.seen('TEAM-A').length, 1, "only team-a's triage asks the LLM");

    assert.notEqual(a.output.caseId, b.output.caseId, 'the same text in two namespaces opens two cases');
    assert.deepEqual([a.output.created, b.output.created], [true, true]);
    const caseA = (await api.get(`/v1/cases/${a.output.caseId}`)).body.case;
    assert.deepEqual([caseA.namespace, caseA.members.map((m: any) => m.runId)], ['team-a', [a.id]]);
    const again = await ran(api, 'triage', { namespace: 'team-a', input: { text: 'bins on Elm Street' } });
    assert.deepEqual([again.output.caseId, again.output.created], [a.output.caseId, false], "a run joins its own namespace's case");

    const hello = await ran(api, 'hello', { namespace: 'team-b', input: null });
    assert.deepEqual([hello.namespace, hello.output, hello.pipelineVersion], ['team-b', 'team-b', null], "the file's pipelines run in every namespace");
    const plain = await ran(api, 'hello', { input: null });
    assert.equal(plain.namespace, 'default', 'a key of every namespace that names none writes to default');
  });

  it('answers a name by the namespace asked: definitions, versions and the list of pipelines', async () => {
    const inB = (await api.get('/v1/pipelines/triage?namespace=team-b')).body.pipeline;
    assert.deepEqual([inB.current.namespace, inB.current.description, inB.versions.map((v: any) => v.namespace)], ['team-b', "team-b's triage", ['team-b']]);
    assert.deepEqual((await api.get('/v1/pipelines/triage/versions/1?namespace=team-a')).body.pipeline.definition.steps[0].name, 'summary');
    const missing = await api.get('/v1/pipelines/triage');
    assert.deepEqual([missing.status, missing.body.error.code], [404, 'FLEETD_ERR_NOT_FOUND'], 'default defines no triage');
    assert.equal((await api.get('/v1/pipelines/triage/versions/1?namespace=team-c')).status, 404);
    assert.equal((await api.post('/v1/pipelines/triage/runs', { namespace: 'team-c', input: null })).status, 404);

    const listed = async (query = '') =>
      (await api.get(`/v1/pipelines${query}`)).body.items.map((p: any) => `${p.name}@${p.namespace ?? 'file'}`);
    assert.deepEqual(await listed('?namespace=team-a'), ['dispatch@file', 'hello@file', 'signoff@file', 'triage@team-a']);
    assert.deepEqual(await listed(), ['dispatch@file', 'hello@file', 'signoff@file', 'triage@team-a', 'triage@team-b']);

    // Deleting team-b's triage leaves team-a's.
    const deleted = await api.request('DELETE', '/v1/pipelines/triage?namespace=team-b');
    assert.deepEqual([deleted.status, deleted.body.pipeline.namespace, deleted.body.pipeline.version], [200, 'team-b', 2]);
    assert.equal((await api.post('/v1/pipelines/triage/runs', { namespace: 'team-b', input: { text: 'x' } })).status, 404);
    assert.deepEqual(await listed(), ['dispatch@file', 'hello@file', 'signoff@file', 'triage@team-a']);
    assert.equal((await api.request('DELETE', '/v1/pipelines/triage?namespace=team-b')).status, 404, 'deleted once');
    const redefined = await api.request('PUT', '/v1/pipelines/triage', triageOf('team-b'));
    assert.equal(redefined.body.pipeline.version, 3);
  });

  it('lists runs and cases of the namespace asked, and keeps idempotency keys per namespace', async () => {
    const runIds = async (query: string) => (await api.get(`/v1/pipelines/runs?${query}`)).body.items.map((r: any) => r.namespace);
    assert.ok((await runIds('namespace=team-a')).every((n: string) => n === 'team-a'));
    assert.ok((await runIds('namespace=team-b&pipeline=triage')).every((n: string) => n === 'team-b'));
    assert.deepEqual(new Set(await runIds('limit=100')), new Set(['team-a', 'team-b', 'default']));
    const cases = (await api.get('/v1/cases?namespace=team-b')).body.items;
    assert.deepEqual(cases.map((c: any) => [c.id, c.namespace]), [[b.output.caseId, 'team-b']]);

    const once = async (namespace: string) => api.post('/v1/pipelines/hello/runs', { namespace, input: 1, idempotencyKey: 'nightly-1' });
    const [inA, inB, againA] = [await once('team-a'), await once('team-b'), await once('team-a')];
    assert.deepEqual([inA.status, inB.status, againA.status], [201, 201, 200], 'the same key in another namespace is another key');
    assert.notEqual(inA.body.run.id, inB.body.run.id);
    assert.equal(againA.body.run.id, inA.body.run.id);
  });

  it('refuses a namespace that is not a name, with a 400 naming the field, and changes nothing', async () => {
    const before = (await api.get('/v1/pipelines/runs?limit=1000')).body.items.length;
    const refused = [
      await api.post('/v1/pipelines/hello/runs', { namespace: 'Team A', input: null }),
      await api.post('/v1/pipelines/hello/runs/batch', { namespace: '-a', runs: [{ input: null }] }),
      await api.request('PUT', '/v1/pipelines/other', { namespace: 'a/b', steps: [{ name: 'w', kind: 'code', fn: 'where' }] }),
      await api.get('/v1/pipelines/runs?namespace=UPPER'),
      await api.get('/v1/cases?namespace=has%20space'),
      await api.get('/v1/pipelines?namespace=%2A'),
      await api.get(`/v1/pipelines/triage?namespace=${'x'.repeat(64)}`),
      await api.request('DELETE', '/v1/pipelines/triage?namespace=_a'),
    ];
    for (const r of refused) {
      assert.equal(r.status, 400, JSON.stringify(r.body));
      assert.equal(r.body.error.code, 'FLEETD_ERR_VALIDATION');
      assert.match(r.body.error.message, /namespace/);
    }
    assert.equal((await api.get('/v1/pipelines/runs?limit=1000')).body.items.length, before, 'no run was started');
    assert.equal((await api.get('/v1/pipelines/other?namespace=a')).status, 404, 'nothing was defined');
  });

  it("decides an approval only from its run's namespace: an agent of another gets the 404 of a run that does not exist", async () => {
    const bot = await api.post('/v1/agents', { name: 'bot', capabilities: ['x'] });
    assert.equal(bot.status, 201);
    const botApi = api.as(bot.body.token);
    const waiting = async (namespace?: string) => {
      const run = (await api.post('/v1/pipelines/signoff/runs', { namespace, input: null })).body.run;
      await eventually(async () => (await api.get(`/v1/pipelines/runs/${run.id}`)).body.run.steps[0].status === 'waiting', 5_000, 'the approval to wait');
      return run;
    };
    const other = await waiting('team-b');
    const elsewhere = await botApi.post(`/v1/pipelines/runs/${other.id}/steps/ok/approve`, {});
    const missing = await botApi.post('/v1/pipelines/runs/987654/steps/ok/approve', {});
    assert.equal(elsewhere.status, 404);
    assert.deepEqual(elsewhere.body.error.code, missing.body.error.code);
    assert.equal(elsewhere.body.error.message.replace(String(other.id), 'N'), missing.body.error.message.replace('987654', 'N'), 'word for word a missing run');
    assert.equal((await api.get(`/v1/pipelines/runs/${other.id}`)).body.run.steps[0].status, 'waiting', 'still undecided');

    // The bot's own namespace (an agent registers in default until agents name theirs).
    const own = await waiting();
    const decided = await botApi.post(`/v1/pipelines/runs/${own.id}/steps/ok/approve`, { comment: 'fine' });
    assert.equal(decided.status, 200, JSON.stringify(decided.body));
    assert.equal(decided.body.run.steps[0].output.by.name, 'bot');
  });

  /** An agent step's task is of its run's namespace: only that namespace's agents take it. */
  it("sends an agent step's task to its run's namespace, whose agents alone take it", async () => {
    const register = (namespace: string) => api.post('/v1/agents', { name: `worker-${namespace}`, capabilities: ['work'], namespace });
    const inA = await register('team-a');
    assert.equal(inA.status, 201, JSON.stringify(inA.body));
    const inB = await register('team-b');
    const workerA = { id: inA.body.agent.id, api: api.as(inA.body.token) };
    const workerB = { id: inB.body.agent.id, api: api.as(inB.body.token) };
    const run = (await api.post('/v1/pipelines/dispatch/runs', { namespace: 'team-a', input: { n: 1 } })).body.run;
    const [task] = (await workerA.api.post('/v1/tasks/claim', { agentId: workerA.id, max: 5, waitMs: 5_000 })).body.tasks;
    assert.deepEqual([task?.namespace, task?.payload.input], ['team-a', { n: 1 }]);
    assert.deepEqual((await workerB.api.post('/v1/tasks/claim', { agentId: workerB.id, max: 5 })).body.tasks, [], "team-b's agent never gets it");
    const done = await workerA.api.post(`/v1/tasks/${task.id}/complete`, { agentId: workerA.id, result: { ok: true } });
    assert.equal(done.status, 200, JSON.stringify(done.body));
    const finished = await finishedRun(api, run.id);
    assert.deepEqual([finished.status, finished.output], ['completed', { ok: true }]);
  });

  /** Keys of one namespace: what a scoped key (POST /v1/keys {namespaces}) sees. */
  it("a key of one namespace sees its runs, cases, definitions and events only; another's answer 404", async () => {
    const made = await api.post('/v1/keys', { name: 'team-a-ci', scope: 'submit', namespaces: ['team-a'] });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    const teamA = api.as(made.body.secret);

    for (const [path, twin] of [
      [`/v1/pipelines/runs/${b.id}`, '/v1/pipelines/runs/987654'],
      [`/v1/cases/${b.output.caseId}`, '/v1/cases/987654'],
    ]) {
      const hidden = await teamA.get(path);
      const absent = await teamA.get(twin);
      assert.deepEqual([hidden.status, hidden.body.error.code], [404, absent.body.error.code], path);
    }
    assert.equal((await teamA.post(`/v1/pipelines/runs/${b.id}/cancel`, {})).status, 404);
    assert.equal((await teamA.post(`/v1/pipelines/runs/${b.id}/steps/ok/approve`, {})).status, 404);
    assert.equal((await teamA.get(`/v1/pipelines/runs/${b.id}/steps/ok/approval`)).status, 404);
    assert.equal((await teamA.get('/v1/pipelines/triage?namespace=team-b')).status, 404);
    assert.equal((await teamA.get('/v1/pipelines/runs?namespace=team-b')).status, 404);
    assert.equal((await teamA.get('/v1/cases?namespace=team-b')).status, 404);
    assert.equal((await teamA.get('/v1/pipelines/triage')).body.pipeline.current.namespace, 'team-a', 'its one namespace, without naming it');
    assert.deepEqual(new Set((await teamA.get('/v1/pipelines/runs?limit=1000')).body.items.map((r: any) => r.namespace)), new Set(['team-a']));
    assert.deepEqual(new Set((await teamA.get('/v1/cases')).body.items.map((c: any) => c.namespace)), new Set(['team-a']));
    assert.deepEqual(
      (await teamA.get('/v1/pipelines')).body.items.map((p: any) => `${p.name}@${p.namespace ?? 'file'}`),
      ['dispatch@file', 'hello@file', 'signoff@file', 'triage@team-a'],
    );
    const started = await teamA.post('/v1/pipelines/hello/runs', { input: null });
    assert.equal(started.body.run.namespace, 'team-a', 'a key of one namespace writes to it without naming it');

    let peer: Peer | undefined;
    try {
      peer = await connect(`${server.url}/v1/events`, { authorization: `Bearer ${made.body.secret}` });
      peer.send({ type: 'subscribe', topics: ['pipelines'] });
      await peer.next('subscribed');
      const inB = await ran(api, 'hello', { namespace: 'team-b', input: null });
      const inA = await ran(api, 'hello', { namespace: 'team-a', input: null });
      await peer.next('events', (m) => m.events.some((e: any) => e.name === 'pipeline.run.finished' && e.data.run.id === inA.id));
      const seen = peer.events();
      assert.ok(seen.length > 0);
      assert.ok(seen.every((e: any) => e.data.run.namespace === 'team-a'), JSON.stringify(seen.map((e: any) => e.data.run)));
      assert.ok(!seen.some((e: any) => e.data.run.id === inB.id), "team-b's run events never reach team-a's socket");
    } finally {
      await peer?.close();
    }
  });
});
