import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startTestServer, type Api, type TestServer } from './helpers.js';
import { dropSchema, TEST_DATABASE_URL, uniqueSchema } from './store/postgres.js';
import { connectAgent } from './ws-helpers.js';

/** Batched completion over HTTP (POST /v1/tasks/complete) and as one agent-stream frame, on both drivers. */
for (const driver of ['sqlite', 'postgres'] as const) {
  describe(`batched completion (${driver})`, () => {
    let server: TestServer;
    let schema: string | undefined;
    before(async () => {
      schema = driver === 'postgres' ? uniqueSchema('fleetd_batch') : undefined;
      server = await startTestServer({
        maxPayloadBytes: 2_048,
        ...(schema ? { databaseUrl: TEST_DATABASE_URL, databaseSchema: schema } : {}),
      });
    });
    after(async () => {
      await server.stop();
      if (schema) {
        await dropSchema(schema);
      }
    });

    /** An agent holding `n` tasks of a type of its own; its API speaks with its token. */
    async function agentHolding(type: string, n: number): Promise<{ id: string; token: string; api: Api; tasks: any[] }> {
      const agent = await server.api.registerAgent([type], { maxConcurrency: 20 });
      const submitted = await server.api.post('/v1/tasks/batch', { tasks: Array.from({ length: n }, (_, i) => ({ type, payload: i, maxAttempts: 3 })) });
      assert.equal(submitted.status, 201);
      const api = server.api.as(agent.token);
      const claimed = await api.post('/v1/tasks/claim', { agentId: agent.id, max: n });
      assert.equal(claimed.body.tasks.length, n);
      return { ...agent, api, tasks: claimed.body.tasks };
    }

    it('answers each item on its own: completions, failures and extensions written, refusals changing nothing', async () => {
      const a = await agentHolding('batch-http', 5);
      const other = await agentHolding('batch-http-other', 1);
      const [done, failed, extended, tooBig, untouched] = a.tasks;
      const res = await a.api.post('/v1/tasks/complete', {
        agentId: a.id,
        items: [
          { op: 'complete', id: done.id, result: { pages: 12 } },
          { op: 'fail', id: failed.id, error: { message: 'HTTP 503' }, retryable: false },
          { op: 'extend', id: extended.id, leaseMs: 600_000 },
          { op: 'complete', id: tooBig.id, result: 'x'.repeat(4_000) },
          { op: 'complete', id: other.tasks[0].id, result: 'not mine' },
          { op: 'complete', id: 987_654_321 },
          { op: 'complete', id: done.id, result: 'twice' },
        ],
      });
      assert.equal(res.status, 200);
      const items = res.body.items;
      assert.deepEqual(items.map((i: any) => i.id), [done.id, failed.id, extended.id, tooBig.id, other.tasks[0].id, 987_654_321, done.id]);
      assert.deepEqual([items[0].status, items[0].leaseExpiresAt], ['completed', null]);
      assert.equal(items[1].status, 'dead');
      assert.equal(items[2].status, 'leased');
      assert.ok(Date.parse(items[2].leaseExpiresAt) > Date.now() + 500_000, 'extended for leaseMs from now');
      assert.deepEqual(
        items.slice(3).map((i: any) => i.error?.code),
        ['FLEETD_ERR_PAYLOAD_TOO_LARGE', 'FLEETD_ERR_LEASE_LOST', 'FLEETD_ERR_NOT_FOUND', 'FLEETD_ERR_VALIDATION'],
      );
      assert.equal(items[4].error.details.holder, other.id);
      assert.equal('response' in res.body || 'tasks' in res.body, false, 'no claim asked, no tasks answered');

      const now = async (id: number) => (await server.api.get(`/v1/tasks/${id}`)).body;
      assert.deepEqual((await now(done.id)).result, { pages: 12 }, 'the repeat of an item did not overwrite the first');
      assert.deepEqual((await now(failed.id)).error, { message: 'HTTP 503' });
      for (const id of [tooBig.id, untouched.id]) assert.deepEqual([(await now(id)).status, (await now(id)).result], ['leased', null]);
      assert.deepEqual([(await now(other.tasks[0].id)).status, (await now(other.tasks[0].id)).agentId], ['leased', other.id]);
    });

    it('claims the next tasks in the same round trip, after the items have freed their room', async () => {
      const agent = await server.api.registerAgent(['batch-next'], { maxConcurrency: 2 });
      const api = server.api.as(agent.token);
      await server.api.post('/v1/tasks/batch', { tasks: Array.from({ length: 5 }, (_, i) => ({ type: 'batch-next', payload: i })) });
      const first = (await api.post('/v1/tasks/claim', { agentId: agent.id, max: 5 })).body.tasks;
      assert.equal(first.length, 2, 'maxConcurrency 2');
      const res = await api.post('/v1/tasks/complete', {
        agentId: agent.id,
        items: first.map((t: any) => ({ op: 'complete', id: t.id, result: t.payload })),
        claim: { max: 5, waitMs: 1_000 },
      });
      assert.equal(res.status, 200);
      assert.deepEqual(res.body.items.map((i: any) => i.status), ['completed', 'completed']);
      assert.deepEqual(res.body.tasks.map((t: any) => t.payload), [2, 3], 'the two slots the completions freed, oldest first');
      assert.ok(res.body.tasks.every((t: any) => t.status === 'leased' && t.agentId === agent.id));
    });

    it('refuses a malformed batch whole with 400 and writes nothing; another agent\'s token cannot send one', async () => {
      const a = await agentHolding('batch-bad', 1);
      const [t] = a.tasks;
      for (const body of [
        { agentId: a.id, items: [] },
        { agentId: a.id, items: [{ op: 'complete', id: t.id }, { op: 'finish', id: t.id }] },
        { agentId: a.id, items: [{ op: 'complete', id: t.id, extra: 1 }] },
        { agentId: a.id, items: [{ op: 'complete', id: t.id }], claim: { max: 0 } },
      ]) {
        const res = await a.api.post('/v1/tasks/complete', body);
        assert.equal(res.status, 400, JSON.stringify(body));
        assert.equal(res.body.error.code, 'FLEETD_ERR_VALIDATION');
      }
      const stranger = await server.api.registerAgent(['batch-bad']);
      const res = await server.api.as(stranger.token).post('/v1/tasks/complete', { agentId: a.id, items: [{ op: 'complete', id: t.id }] });
      assert.equal(res.status, 403);
      assert.equal((await server.api.get(`/v1/tasks/${t.id}`)).body.status, 'leased');
    });

    it('takes the same batch as one agent-stream frame, answered by one batch message with its ref', async () => {
      const agent = await server.api.registerAgent(['batch-ws'], { maxConcurrency: 4 });
      await server.api.post('/v1/tasks/batch', { tasks: Array.from({ length: 3 }, (_, i) => ({ type: 'batch-ws', payload: i })) });
      const { peer } = await connectAgent(server.url, agent);
      try {
        peer.send({ type: 'credit', add: 3 });
        const pushed: any[] = [];
        while (pushed.length < 3) pushed.push(...(await peer.next('tasks')).tasks);
        const [a, b, c] = pushed;
        peer.send({
          type: 'batch',
          ref: 'b1',
          items: [
            { op: 'complete', id: a.id, result: 'a' },
            { op: 'fail', id: b.id, error: 'b', retryable: true },
            { op: 'extend', id: c.id },
            { op: 'complete', id: c.id, result: 'c' },
          ],
        });
        const answer = await peer.next('batch', (m) => m.ref === 'b1');
        assert.deepEqual(answer.items.map((i: any) => [i.id, i.status ?? i.error.code]), [
          [a.id, 'completed'],
          [b.id, 'scheduled'],
          [c.id, 'leased'],
          [c.id, 'FLEETD_ERR_VALIDATION'],
        ]);
        assert.equal((await server.api.get(`/v1/tasks/${c.id}`)).body.status, 'leased');

        peer.send({ type: 'batch', ref: 'b2', items: [{ op: 'complete', id: c.id }, { op: 'complete' }] });
        const refused = await peer.next('error', (m) => m.error.details.ref === 'b2');
        assert.equal(refused.error.code, 'FLEETD_ERR_VALIDATION');
        assert.equal((await server.api.get(`/v1/tasks/${c.id}`)).body.status, 'leased', 'a malformed frame writes nothing');
      } finally {
        await peer.close();
      }
    });
  });
}
