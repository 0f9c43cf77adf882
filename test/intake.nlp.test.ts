import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startTestServer } from './helpers.js';

test('free text becomes a task: capability of an online agent, priority from urgency, due date and entities', async () => {
  const server = await startTestServer();
  try {
    await server.api.registerAgent(['crawl']);
    const res = await server.api.post('/v1/intake', { text: 'urgent: re-run the nightly crawl for acme.com before Friday' });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    assert.equal(res.body.task.type, 'crawl');
    assert.equal(res.body.task.priority, 100);
    assert.equal(res.body.intake.urgency, 'urgent');
    assert.equal(res.body.intake.due.text, 'Friday');
    assert.equal(new Date(res.body.intake.due.at).getUTCDay(), 5);
    assert.ok(res.body.intake.timing.modelLoadMs >= 0);

    const preview = await server.api.post('/v1/intake', { text: 'summarise the quarterly report whenever you can', submit: false });
    assert.equal(preview.status, 200);
    assert.equal(preview.body.task, null);
    assert.equal(preview.body.intake.priority, -10);
    assert.equal((await server.api.get('/v1/tasks?limit=10')).body.items.length, 1, 'the preview created no task');

    const empty = await server.api.post('/v1/intake', { text: '' });
    assert.equal(empty.status, 400);
    assert.equal(empty.body.error.code, 'FLEETD_ERR_VALIDATION');
  } finally {
    await server.stop();
  }
});
