import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { PipelineSetup } from '../src/pipelines/pipelines.js';
import { finishedRun, startPipelineServer } from './fake-llm.js';
import { drivers, eventually, stopAndDrop, type Api, type TestServer } from './helpers.js';
import { connect, type Peer } from './ws-helpers.js';

/**
 * Nothing crosses between namespaces: with an admin key of team-a, every operation of the API that
 * names a resource by id or name is tried with team-b's ids, and each answers 404, exactly as an id
 * that does not exist; every list, export, stats read and event stream of team-a holds nothing of
 * team-b; and team-b's things are as they were afterwards.
 */
const MARK = 'zz-only-in-team-b';

const setup: PipelineSetup = {
  functions: { words: (ctx) => String((ctx.input as { text?: unknown } | null)?.text ?? '').split(/\s+/).length },
  pipelines: [{ name: 'count', steps: [{ name: 'words', kind: 'code', fn: 'words' }] }],
};

for (const [driver, store] of Object.entries(drivers)) describe(`nothing crosses between namespaces (${driver})`, { timeout: 180_000 }, () => {
  let server: TestServer;
  let admin: Api;
  let teamA: Api;
  let teamB: Api;
  let agentA: { id: string; token: string };
  /** team-b's things, by kind. */
  const b = {} as { agent: { id: string; token: string }; queued: number; leased: number; done: number; lock: string; schedule: string; run: number; pipeline: string; key: string };

  const snapshot = async () => ({
    tasks: (await teamB.get('/v1/tasks?limit=100')).body.items.map((t: any) => [t.id, t.status, t.attempts, t.agentId]),
    agent: (await teamB.get(`/v1/agents/${b.agent.id}`)).body.agent?.status ?? (await teamB.get(`/v1/agents/${b.agent.id}`)).body.status,
    lock: (await teamB.get(`/v1/locks/${b.lock}`)).status,
    schedule: (await teamB.get(`/v1/schedules/${b.schedule}`)).body,
    run: (await teamB.get(`/v1/pipelines/runs/${b.run}`)).body.run.status,
    pipeline: (await teamB.get(`/v1/pipelines/${b.pipeline}`)).status,
    key: (await admin.get('/v1/keys')).body.items.find((k: any) => k.id === b.key),
  });

  before(async () => {
    server = await startPipelineServer(setup, { authFailuresPerMinute: 0, ...store() });
    admin = server.api;
    const keyOf = async (namespace: string) => (await admin.post('/v1/keys', { name: namespace, scope: 'admin', namespaces: [namespace] })).body;
    teamA = admin.as((await keyOf('team-a')).secret);
    const keyB = await keyOf('team-b');
    teamB = admin.as(keyB.secret);
    b.key = keyB.key.id;

    agentA = await teamA.registerAgent(['work']);
    await teamA.submit({ type: 'work', payload: { team: 'a' } });

    b.agent = await teamB.registerAgent(['work'], { name: MARK });
    // Its usage is reported under a concurrency key that names it: usage sums must not show it to team-a.
    b.done = (await teamB.submit({ type: 'work', payload: { MARK }, concurrencyKey: MARK })).id;
    const [first] = await teamB.claim(b.agent.id);
    assert.equal(first.id, b.done);
    assert.equal((await teamB.post(`/v1/tasks/${b.done}/complete`, { agentId: b.agent.id, result: MARK, usage: { inputTokens: 7 } })).status, 200);
    b.leased = (await teamB.submit({ type: 'work', payload: { MARK }, tags: ['team-b'] })).id;
    assert.equal((await teamB.claim(b.agent.id))[0].id, b.leased);
    b.queued = (await teamB.submit({ type: 'work', payload: { MARK }, priority: -1, idempotencyKey: MARK })).id;
    const lock = await teamB.post('/v1/locks', { agentId: b.agent.id, resources: [`${MARK}/a.ts`], ttlMs: 600_000 });
    assert.equal(lock.status, 200, JSON.stringify(lock.body));
    b.lock = lock.body.id;
    const schedule = await teamB.post('/v1/schedules', { name: MARK, cron: '0 0 1 1 *', task: { type: 'work', payload: { MARK } } });
    assert.equal(schedule.status, 201, JSON.stringify(schedule.body));
    b.schedule = MARK;
    const defined = await teamB.put(`/v1/pipelines/${MARK}`, { steps: [{ name: 'words', kind: 'code', fn: 'words' }] });
    assert.ok(defined.status === 200 || defined.status === 201, JSON.stringify(defined.body));
    b.pipeline = MARK;
    const run = await teamB.post('/v1/pipelines/count/runs', { input: { text: MARK } });
    assert.equal(run.status, 201, JSON.stringify(run.body));
    b.run = run.body.run.id;
    await finishedRun(teamB, b.run);
  });
  after(async () => {
    if (server) await stopAndDrop(server);
  });

  it("answers every operation on team-b's ids with the 404 of an id that does not exist, and changes nothing", async () => {
    const before = await snapshot();
    const doc = (await admin.get('/openapi.json')).body as { paths: Record<string, Record<string, any>> };
    const idFor = (path: string, param: string): string | undefined => {
      if (param === 'step') return 'words';
      if (param === 'version') return '1';
      if (path.startsWith('/v1/tasks/')) return String(path.includes('/complete') || path.includes('/fail') || path.includes('/extend') || path.includes('/release') || path.includes('/progress') || path.includes('/log') || path.includes('/output') ? b.leased : b.queued);
      if (path.startsWith('/v1/agents/')) return b.agent.id;
      if (path.startsWith('/v1/locks/')) return b.lock;
      if (path.startsWith('/v1/schedules/')) return b.schedule;
      if (path.startsWith('/v1/pipelines/runs/')) return String(b.run);
      if (path.startsWith('/v1/pipelines/')) return b.pipeline;
      if (path.startsWith('/v1/keys/')) return b.key;
      if (path.startsWith('/v1/namespaces/')) return 'team-b';
      return undefined;
    };
    const tried: string[] = [];
    const wrong: string[] = [];
    for (const [template, operations] of Object.entries(doc.paths)) {
      const params = [...template.matchAll(/\{(\w+)\}/g)].map((m) => m[1]);
      if (params.length === 0) continue;
      // Types are named alike in every namespace (team-a's own `work` answers; reaching team-b's is
      // checked below with ?namespace=team-b); cases are not per namespace here.
      if (template.startsWith('/v1/types/') || template.startsWith('/v1/cases/')) continue;
      for (const [method, op] of Object.entries(operations)) {
        // Setting quotas is refused alike (403) for every name to an admin of some namespaces; a
        // pipeline's name is per namespace, so defining one of team-b's name makes team-a's own.
        if ((template === '/v1/namespaces/{name}' || template === '/v1/pipelines/{name}') && method === 'put') continue;
        let path = template;
        for (const p of params) {
          const id = idFor(template, p);
          assert.ok(id !== undefined, `no team-b id for ${template}`);
          path = path.replace(`{${p}}`, encodeURIComponent(id));
        }
        const example = op.requestBody?.content?.['application/json']?.example;
        // A valid body, so that the answer is the route's own and not the schema's 400.
        const body = template.endsWith('/runs/batch')
          ? { runs: [{ input: {} }] }
          : example === undefined
            ? { agentId: agentA.id }
            : { ...example, ...('agentId' in example ? { agentId: agentA.id } : {}) };
        const res = await teamA.request(method.toUpperCase(), path, method === 'get' || method === 'delete' ? undefined : body);
        tried.push(`${method.toUpperCase()} ${template}`);
        if (res.status !== 404 || res.body?.error?.code !== 'FLEETD_ERR_NOT_FOUND') wrong.push(`${method.toUpperCase()} ${path} → ${res.status} ${JSON.stringify(res.body).slice(0, 200)}`);
      }
    }
    assert.ok(tried.length >= 30, `only ${tried.length} operations tried`);
    assert.deepEqual(wrong, []);
    const afterwards = await snapshot();
    for (const k of Object.keys(before) as (keyof typeof before)[]) assert.deepEqual(afterwards[k], before[k], `team-b's ${k} changed`);
  });

  it("shows nothing of team-b in team-a's lists, exports and stats", async () => {
    const doc = (await admin.get('/openapi.json')).body as { paths: Record<string, Record<string, any>> };
    const lists = Object.entries(doc.paths)
      .filter(([path, ops]) => !path.includes('{') && ops.get && path.startsWith('/v1/') && !['/v1/events', '/v1/audit'].includes(path))
      .map(([path]) => path);
    assert.ok(lists.includes('/v1/tasks') && lists.includes('/v1/agents') && lists.includes('/v1/locks') && lists.includes('/v1/tasks/export'));
    for (const path of lists) {
      const res = await teamA.request('GET', path);
      assert.ok(res.status < 500, `${path}: ${res.status}`);
      assert.ok(!JSON.stringify(res.body).includes(MARK), `${path} shows team-b's things: ${JSON.stringify(res.body).slice(0, 300)}`);
    }
    const stats = (await teamA.get('/v1/stats')).body;
    const sum = (counts: Record<string, number>) => Object.values(counts).reduce((x, y) => x + y, 0);
    assert.equal(sum(stats.tasks.byStatus), 1, "team-a's stats count team-a's one task");
    assert.equal(sum(stats.agents.byStatus), 1);
    // A type is its namespace's: team-a sees and sets its own `work`, and reaches none of team-b's.
    const work = (await teamA.get('/v1/types')).body.items.filter((t: any) => t.type === 'work');
    assert.deepEqual(work.map((t: any) => [t.namespace, sum(t.counts)]), [['team-a', 1]], JSON.stringify(work));
    assert.equal(sum((await teamA.get('/v1/types/work')).body.counts), 1);
    const set = await teamA.put('/v1/types/work', { maxConcurrency: 1000 });
    assert.equal(set.status, 200, JSON.stringify(set.body));
    assert.equal(set.body.namespace, 'team-a');
    for (const res of [
      await teamA.get('/v1/types/work?namespace=team-b'),
      await teamA.put('/v1/types/work?namespace=team-b', { maxConcurrency: 1 }),
      await teamA.post('/v1/types/work/pause?namespace=team-b', {}),
      await teamA.post('/v1/types/work/resume?namespace=team-b', {}),
    ]) {
      assert.equal(res.status, 404, JSON.stringify(res.body));
    }
    const ofTeamB = (await admin.get('/v1/types/work?namespace=team-b')).body;
    assert.deepEqual([ofTeamB.policy, ofTeamB.paused, sum(ofTeamB.counts)], [null, false, 3], "team-a's policy is not team-b's");
    const everywhere = (await admin.get('/v1/types')).body.items.filter((t: any) => t.type === 'work');
    assert.deepEqual(everywhere.map((t: any) => [t.namespace, sum(t.counts)]), [['team-a', 1], ['team-b', 3]], 'a key of every namespace sees each namespace\'s');
    // Naming the other namespace is a 404, not an empty list.
    for (const path of ['/v1/tasks?namespace=team-b', '/v1/agents?namespace=team-b', '/v1/locks?namespace=team-b']) {
      assert.equal((await teamA.get(path)).status, 404, path);
    }
  });

  it("streams team-a's events to team-a's observers and none of team-b's, live or replayed", async () => {
    let peer: Peer | undefined;
    let peerB: Peer | undefined;
    try {
      peer = await connect(`${server.url}/v1/events?since=0`, { authorization: `Bearer ${teamA.key}` });
      peer.send({ type: 'subscribe', topics: ['tasks', 'agents', 'locks', 'pipelines', 'stats', `task:${b.queued}`, `run:${b.run}`] });
      await peer.next('subscribed');
      await teamB.submit({ type: 'work', payload: { MARK } });
      await teamB.post(`/v1/tasks/${b.leased}/progress`, { agentId: b.agent.id, progress: 0.5, message: MARK });
      await teamB.post('/v1/pipelines/count/runs', { input: { text: MARK } });
      // A task's locks, taken with its lease, announce themselves as lock events of its namespace:
      // to team-b's observers, never to team-a's.
      peerB = await connect(`${server.url}/v1/events`, { authorization: `Bearer ${teamB.key}` });
      peerB.send({ type: 'subscribe', topics: ['locks'] });
      await peerB.next('subscribed');
      const locker = await teamB.registerAgent(['locked']);
      const locked = await teamB.submit({ type: 'locked', locks: [`${MARK}/held-by-a-task.ts`] });
      assert.deepEqual((await teamB.claim(locker.id)).map((t: any) => t.id), [locked.id]);
      await peerB.next('events', (m) => m.events.some((e: any) => e.name === 'lock.acquired' && e.data.lock.resources[0] === `${MARK}/held-by-a-task.ts`));
      // Published after team-b's: once it arrives, team-b's would have arrived before it.
      const last = await teamA.submit({ type: 'work', payload: { team: 'a', last: true } });
      await eventually(() => peer!.received.some((m) => m.type === 'events' && m.events.some((e: any) => e.name === 'task.created' && e.data.task.id === last.id)), 5_000, "team-a's last task.created");
      await eventually(() => peer!.received.some((m) => m.type === 'events' && m.events.some((e: any) => e.name === 'stats')), 5_000, 'a stats snapshot');
      const events = peer.events();
      assert.ok(events.length > 0);
      assert.deepEqual(events.filter((e: any) => JSON.stringify(e).includes(MARK) || JSON.stringify(e.data).includes('"team-b"')), []);
    } finally {
      await peer?.close();
      await peerB?.close();
    }
  });
});
