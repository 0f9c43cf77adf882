import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Api, startTestServer, type TestServer } from './helpers.js';

const TAGS = ['agents', 'tasks', 'locks', 'schedules', 'types', 'pipelines', 'cases', 'keys', 'namespaces', 'system'];
const PUBLIC = new Set(['/healthz', '/readyz']);

describe('the OpenAPI document', () => {
  let server: TestServer;
  let doc: any;
  const operations: { method: string; path: string; op: any }[] = [];
  before(async () => {
    server = await startTestServer();
    doc = (await new Api(server.url).get('/openapi.json')).body;
    for (const [path, ops] of Object.entries<any>(doc.paths)) {
      for (const [method, op] of Object.entries<any>(ops)) operations.push({ method: method.toUpperCase(), path, op });
    }
  });
  after(() => server.stop());

  it('gives every operation a summary, a description and one of the tags', () => {
    assert.ok(operations.length >= 40, `only ${operations.length} operations`);
    for (const { method, path, op } of operations) {
      const name = `${method} ${path}`;
      assert.ok(typeof op.summary === 'string' && op.summary.length > 5, `${name} has no summary`);
      assert.ok(typeof op.description === 'string' && op.description.length > op.summary.length / 2, `${name} has no description`);
      assert.equal(op.tags?.length, 1, `${name} has tags ${JSON.stringify(op.tags)}`);
      assert.ok(TAGS.includes(op.tags[0]), `${name} has tag ${op.tags[0]}`);
    }
    assert.deepEqual(doc.tags.map((t: any) => t.name), TAGS);
    assert.deepEqual(new Set(operations.map((o) => o.op.tags[0])), new Set(TAGS));
  });

  it('declares the bearer scheme, on every operation that needs a credential and on no other', () => {
    assert.deepEqual(
      { type: doc.components.securitySchemes.bearer.type, scheme: doc.components.securitySchemes.bearer.scheme },
      { type: 'http', scheme: 'bearer' },
    );
    for (const { method, path, op } of operations) {
      if (PUBLIC.has(path)) assert.equal(op.security, undefined, `${method} ${path}`);
      else assert.deepEqual(op.security, [{ bearer: [] }], `${method} ${path}`);
    }
  });

  it('has request examples for the main operations, and "try it out" with a key accepts them', async () => {
    const example = (method: string, path: string) => doc.paths[path][method].requestBody?.content?.['application/json']?.example;
    for (const [method, path] of [
      ['post', '/v1/agents'],
      ['post', '/v1/tasks'],
      ['post', '/v1/tasks/batch'],
      ['post', '/v1/tasks/claim'],
      ['post', '/v1/tasks/{id}/complete'],
      ['post', '/v1/tasks/{id}/fail'],
      ['post', '/v1/locks'],
      ['post', '/v1/keys'],
      ['post', '/v1/pipelines/{name}/runs'],
      ['post', '/v1/intake'],
    ]) {
      assert.ok(example(method, path), `${method} ${path} has no example`);
    }
    assert.ok(doc.paths['/v1/tasks'].post.responses['201'].content['application/json'].example.task.id);
    // Sent as /docs sends them, with the key given to Authorize.
    for (const path of ['/v1/agents', '/v1/tasks', '/v1/tasks/batch', '/v1/keys']) {
      const res = await server.api.post(path, example('post', path));
      assert.equal(res.status, 201, `${path}: ${JSON.stringify(res.body)}`);
    }
    const agent = await server.api.registerAgent(['crawl']);
    const claim = await server.api.post('/v1/tasks/claim', { ...example('post', '/v1/tasks/claim'), agentId: agent.id, waitMs: 0 });
    assert.equal(claim.status, 200);
    assert.equal(claim.body.tasks[0].type, 'crawl');
    const lock = await server.api.post('/v1/locks', { ...example('post', '/v1/locks'), agentId: agent.id });
    assert.equal(lock.status, 200);
  });

  it('serves the docs UI at /docs', async () => {
    const res = await fetch(`${server.url}/docs/`);
    assert.equal(res.status, 200);
    assert.match(await res.text(), /swagger/i);
  });
});
