import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { twoNodes, type NodeProcess } from './cluster/node-process.js';

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Two `fleetd start` processes on one PostgreSQL schema and one Redis: one line of lock requests waiting, first come first served. */
describe('lock requests waiting in line across two fleetd nodes', { timeout: 120_000 }, () => {
  const cluster = twoNodes();

  it('grants waiting requests in the order they came, whichever node each waits on, each woken by a release on the other node', async () => {
    const { a, b } = cluster;
    const [holder, first, second, third] = await Promise.all([a, b, a, b].map((node) => node.api.registerAgent(['dev'])));
    const held = await a.api.post('/v1/locks', { agentId: holder.id, resources: ['repo/src/'], ttlMs: 60_000 });
    assert.equal(held.status, 200);
    const order: string[] = [];
    const wait = (node: NodeProcess, agent: { id: string }, name: string, resources: string[]) =>
      node.api.post('/v1/locks', { agentId: agent.id, resources, ttlMs: 60_000, waitMs: 30_000 }).then((r) => (order.push(name), r));
    // first waits on B, second on A, third on B; the second and third want only what is free now
    // (b.ts, docs/), but the requests ahead of them want it too.
    const one = wait(b, first, 'first', ['repo/src/a.ts', 'repo/b.ts']);
    await pause(300);
    const two = wait(a, second, 'second', ['repo/b.ts', 'repo/docs/']);
    await pause(300);
    const three = wait(b, third, 'third', ['repo/docs/x.md']);
    await pause(500);
    assert.deepEqual(order, [], 'nobody passes the requests ahead of it, on either node');
    // A request that does not wait does not pass them either: the 409 says why.
    const impatient = await a.api.post('/v1/locks', { agentId: holder.id, resources: ['repo/docs/y.md'], ttlMs: 60_000 });
    assert.equal(impatient.status, 409);
    assert.equal(impatient.body.error.details.waitingAhead, 1, 'the second wants docs/');

    // The release on A wakes the first, which waits on B.
    assert.equal((await a.api.delete(`/v1/locks/${held.body.id}`)).status, 200);
    const got1 = await one;
    assert.equal(got1.status, 200);
    assert.deepEqual(got1.body.resources, ['repo/src/a.ts', 'repo/b.ts']);
    await pause(300);
    assert.deepEqual(order, ['first'], 'the second still waits for b.ts, the third behind it for docs/');
    // Its release on B wakes the second, on A; the second's release on A wakes the third, on B.
    assert.equal((await b.api.delete(`/v1/locks/${got1.body.id}`)).status, 200);
    const got2 = await two;
    assert.equal(got2.status, 200);
    await pause(300);
    assert.deepEqual(order, ['first', 'second']);
    assert.equal((await a.api.delete(`/v1/locks/${got2.body.id}`)).status, 200);
    const got3 = await three;
    assert.equal(got3.status, 200);
    assert.deepEqual(order, ['first', 'second', 'third']);
    assert.equal((await a.api.delete(`/v1/locks/${got3.body.id}`)).status, 200);
  });

  it('a request that gives up leaves the line, and the one behind it on the other node goes at once', async () => {
    const { a, b } = cluster;
    const [holder, first, second] = await Promise.all([a, b, a].map((node) => node.api.registerAgent(['dev'])));
    const held = await a.api.post('/v1/locks', { agentId: holder.id, resources: ['repo2/x'], ttlMs: 60_000 });
    assert.equal(held.status, 200);
    // The first (on B) wants x, held, and y, free; it gives up after 1.5 s. The second (on A) wants
    // only y, and waits behind it up to 30 s.
    const one = b.api.post('/v1/locks', { agentId: first.id, resources: ['repo2/x', 'repo2/y'], ttlMs: 60_000, waitMs: 1_500 });
    await pause(300);
    const two = a.api.post('/v1/locks', { agentId: second.id, resources: ['repo2/y'], ttlMs: 60_000, waitMs: 30_000 });
    const gaveUp = await one;
    assert.equal(gaveUp.status, 409);
    assert.deepEqual(gaveUp.body.error.details.conflicts.map((c: any) => c.agentId), [holder.id]);
    const started = Date.now();
    const got = await two;
    assert.equal(got.status, 200);
    assert.deepEqual(got.body.resources, ['repo2/y']);
    assert.ok(Date.now() - started < 20_000, 'woken by the first leaving the line on the other node, not by its own wait running out');
    assert.equal((await a.api.get(`/v1/locks/${held.body.id}`)).body.agentId, holder.id, 'x is still held');
  });
});
