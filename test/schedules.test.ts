import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FleetClient } from '../src/client/index.js';
import type { FleetdConfig } from '../src/config.js';
import { drivers, eventually, startTestServer, stopAndDrop, tempDir, type Api } from './helpers.js';

/** The fires a schedule submitted: each task's fire time (from its idempotency key) and when it was created. */
async function firesOf(api: Api, type: string): Promise<{ at: number; createdAt: number; id: number }[]> {
  const out: { at: number; createdAt: number; id: number }[] = [];
  let cursor: string | null = null;
  do {
    const res: { body: { items: { id: number; idempotencyKey: string; createdAt: string }[]; nextCursor: string | null } } = await api.get(
      `/v1/tasks?type=${type}&limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`,
    );
    for (const t of res.body.items) out.push({ at: Date.parse(t.idempotencyKey.split(':').slice(2).join(':')), createdAt: Date.parse(t.createdAt), id: t.id });
    cursor = res.body.nextCursor;
  } while (cursor);
  return out.sort((a, b) => a.at - b.at);
}

/** Seconds between the first and the last fire that have no fire. */
const gaps = (fires: { at: number }[]) => fires.slice(1).reduce((n, f, i) => n + Math.round((f.at - fires[i].at) / 1000) - 1, 0);

for (const [driver, store] of Object.entries(drivers)) {
  describe(`recurring schedules (${driver})`, { timeout: 120_000 }, () => {
    it('creates, lists, shows next fire times, pauses, resumes and deletes; refuses bad input changing nothing', async () => {
      const config = store();
      const server = await startTestServer(config);
      const { api } = server;
      try {
        const created = await api.post('/v1/schedules', { name: 'nightly', cron: '30 2 * * *', timezone: 'Europe/Berlin', task: { type: 'crawl', payload: { site: 'acme' } } });
        assert.equal(created.status, 201, JSON.stringify(created.body));
        assert.equal(created.body.overlap, 'skip');
        assert.equal(created.body.catchUp, 'latest');
        assert.equal(created.body.nextFires.length, 5);
        // 02:30 in Berlin is 01:30 UTC in winter and 00:30 UTC in summer.
        for (const fire of created.body.nextFires) assert.match(fire, /T0[01]:30:00\.000Z$/);

        const bad: [string, unknown, number, string][] = [
          ['a cron that does not parse', { name: 'a', cron: '61 * * * *', task: { type: 'x' } }, 400, 'cron'],
          ['seven fields', { name: 'a', cron: '* * * * * * *', task: { type: 'x' } }, 400, 'cron'],
          ['a time zone that does not exist', { name: 'a', cron: '* * * * *', timezone: 'Mars/Olympus', task: { type: 'x' } }, 400, 'timezone'],
          ['a name taken', { name: 'nightly', cron: '* * * * *', task: { type: 'x' } }, 409, 'nightly'],
          ['a task with runAt', { name: 'a', cron: '* * * * *', task: { type: 'x', runAt: '2030-01-01T00:00:00Z' } }, 400, 'runAt'],
          ['an unknown overlap', { name: 'a', cron: '* * * * *', task: { type: 'x' }, overlap: 'queue' }, 400, 'overlap'],
          ['a name with a space', { name: 'a b', cron: '* * * * *', task: { type: 'x' } }, 400, 'name'],
          ['a payload nested too deep', { name: 'a', cron: '* * * * *', task: { type: 'x', payload: JSON.parse('['.repeat(70) + ']'.repeat(70)) } }, 400, 'payload'],
        ];
        for (const [what, body, status, mentions] of bad) {
          const res = await api.post('/v1/schedules', body);
          assert.equal(res.status, status, `${what}: ${JSON.stringify(res.body)}`);
          assert.equal(res.body.error.code, status === 409 ? 'FLEETD_ERR_SCHEDULE_EXISTS' : 'FLEETD_ERR_VALIDATION', what);
          assert.match(JSON.stringify(res.body.error), new RegExp(mentions), what);
        }
        const list = await api.get('/v1/schedules');
        assert.deepEqual(list.body.items.map((s: { name: string }) => s.name), ['nightly']);
        assert.equal(list.body.items[0].cron, '30 2 * * *', 'the name taken left the first schedule as it was');

        const paused = await api.post('/v1/schedules/nightly/pause');
        assert.equal(paused.body.paused, true);
        assert.deepEqual(paused.body.nextFires, []);
        const resumed = await api.post('/v1/schedules/nightly/resume');
        assert.equal(resumed.body.paused, false);
        assert.equal(resumed.body.nextFires.length, 5);
        for (const path of ['/v1/schedules/nope', '/v1/schedules/nope/pause']) {
          const res = path.endsWith('pause') ? await api.post(path) : await api.get(path);
          assert.equal(res.status, 404);
          assert.equal(res.body.error.code, 'FLEETD_ERR_NOT_FOUND');
        }
        // The same through the TypeScript SDK.
        const client = new FleetClient({ url: server.url, apiKey: server.adminKey });
        assert.deepEqual((await client.schedules()).items.map((x) => x.name), ['nightly']);
        assert.equal((await client.pauseSchedule('nightly')).paused, true);
        assert.equal((await client.resumeSchedule('nightly')).paused, false);
        assert.equal((await client.schedule('nightly')).timezone, 'Europe/Berlin');
        const hourly = await client.createSchedule({ name: 'hourly', cron: '0 * * * *', task: { type: 'report' }, catchUp: 'none' });
        assert.equal(hourly.catchUp, 'none');
        assert.equal((await client.deleteSchedule('hourly')).name, 'hourly');
        assert.equal((await api.delete('/v1/schedules/nightly')).status, 200);
        assert.equal((await api.get('/v1/schedules/nightly')).status, 404);
        assert.equal((await api.delete('/v1/schedules/nightly')).status, 404);
        assert.equal((await api.get('/v1/tasks')).body.items.length, 0, 'nothing fired');
      } finally {
        await stopAndDrop(server);
      }
    });

    it('fires every second, each fire once and on time; pause stops it; overlap skip passes fires over while one runs', async (t) => {
      const config = store();
      const server = await startTestServer(config);
      const { api } = server;
      try {
        await api.post('/v1/schedules', { name: 'tick', cron: '* * * * * *', task: { type: 'tick' }, overlap: 'allow' });
        await api.post('/v1/schedules', { name: 'slow', cron: '* * * * * *', task: { type: 'slow' }, overlap: 'skip' });
        await eventually(async () => (await firesOf(api, 'tick')).length >= 4, 20_000, 'four fires');
        const paused = await api.post('/v1/schedules/tick/pause');
        assert.equal(paused.status, 200);
        const fires = await firesOf(api, 'tick');
        assert.equal(gaps(fires), 0, 'a fire every second, none missing');
        const late = fires.map((f) => f.createdAt - f.at);
        t.diagnostic(`lateness of each fire (ms): ${late.join(', ')}`);
        // Within a second on a quiet machine; the bound is generous because the test machine is loaded.
        assert.ok(late.every((ms) => ms >= 0 && ms < 2_000), `late: ${late}`);
        await new Promise((r) => setTimeout(r, 2_000));
        assert.ok((await firesOf(api, 'tick')).length <= fires.length + 1, 'paused, it fires no more (one may have been in flight)');
        // Nobody works on `slow`: its first task stays queued, so every later fire is passed over.
        assert.equal((await firesOf(api, 'slow')).length, 1);
        assert.equal((await api.get('/v1/schedules/slow')).body.lastTaskId, (await firesOf(api, 'slow'))[0].id);
      } finally {
        await stopAndDrop(server);
      }
    });

    it('after a restart, submits the fires it missed as each catchUp says: none, the latest, all', async (t) => {
      const config: Partial<FleetdConfig> = { ...store(), dataDir: tempDir(), scheduleGraceMs: 1_000 };
      let server = await startTestServer(config);
      try {
        for (const catchUp of ['none', 'latest', 'all']) {
          const res = await server.api.post('/v1/schedules', { name: `c-${catchUp}`, cron: '* * * * * *', task: { type: `c-${catchUp}` }, overlap: 'allow', catchUp });
          assert.equal(res.status, 201);
        }
        await eventually(async () => (await firesOf(server.api, 'c-all')).length >= 2, 20_000, 'fires before the stop');
        await server.stop({ keepData: true });
        const stoppedAt = Date.now();
        await new Promise((r) => setTimeout(r, 5_000));
        const restartedAt = Date.now();
        server = await startTestServer(config);
        await eventually(async () => (await firesOf(server.api, 'c-none')).some((f) => f.createdAt > stoppedAt), 20_000, 'fires after the restart');
        await new Promise((r) => setTimeout(r, 1_500));
        // Fires whose time came while no server ran, more than the grace before the restart began:
        // missed for certain, whatever the restarted server's first pass (and a loaded machine's
        // lateness) makes of the seconds around it.
        const missed = (fires: { at: number }[]) => fires.filter((f) => f.at > stoppedAt && f.at < restartedAt - 1_000);
        const of: Record<string, { at: number; createdAt: number; id: number }[]> = {};
        for (const catchUp of ['none', 'latest', 'all']) {
          const fires = (of[catchUp] = await firesOf(server.api, `c-${catchUp}`));
          t.diagnostic(`${catchUp}: ${fires.length} fires, ${missed(fires).length} of the missed seconds submitted, ${gaps(fires)} seconds without a fire`);
          assert.equal(new Set(fires.map((f) => f.at)).size, fires.length, 'no fire twice');
        }
        assert.equal(missed(of.none).length, 0, 'none: no missed fire is submitted');
        assert.ok(gaps(of.none) >= 3, 'none: the seconds it was down are left out');
        assert.ok(missed(of.latest).length <= 1, 'latest: at most the latest missed fire is submitted');
        assert.ok(gaps(of.latest) >= 2, 'latest: the missed seconds before the latest are left out');
        assert.ok(gaps(of.latest) < gaps(of.none), 'latest: one second more than none is submitted, the latest missed');
        assert.ok(missed(of.all).length >= 3, 'all: the missed fires are submitted');
        assert.equal(gaps(of.all), 0, 'all: every missed fire is submitted');
      } finally {
        await stopAndDrop(server);
      }
    });
  });
}
