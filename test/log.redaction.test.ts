import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import pino from 'pino';
import { redactPaths, redactUrl } from '../src/server/redaction.js';
import { startTestServer } from './helpers.js';

/** A logger whose lines a test reads. */
function capturedLog(): { logger: pino.Logger; text: () => string; lines: () => Record<string, any>[] } {
  let text = '';
  const sink = new Writable({
    write(chunk, _enc, done) {
      text += String(chunk);
      done();
    },
  });
  return {
    logger: pino({ level: 'info' }, sink),
    text: () => text,
    lines: () => text.split('\n').filter(Boolean).map((l) => JSON.parse(l)),
  };
}

describe('redaction of named fields in the log', () => {
  it('replaces the default fields wherever they sit in a logged object, and leaves the rest', async () => {
    const log = capturedLog();
    const server = await startTestServer({}, { logger: log.logger });
    try {
      const payload = { user: 'ada', password: 'hunter2', nested: { apiKey: 'ak-123', deeper: { token: 'tk-456', list: 'kept' } }, secret: 's3' };
      server.app.log.warn({ task: { id: 1, payload } }, 'a payload in a log line');
      const line = log.lines().find((l) => l.msg === 'a payload in a log line')!;
      assert.deepEqual(line.task.payload, {
        user: 'ada',
        password: '[redacted]',
        nested: { apiKey: '[redacted]', deeper: { token: '[redacted]', list: 'kept' } },
        secret: '[redacted]',
      });
      for (const secret of ['hunter2', 'ak-123', 'tk-456', 's3']) assert.ok(!log.text().includes(secret), secret);
    } finally {
      await server.stop();
    }
  });

  it('redacts the configured fields in the slow-request log and in log lines, FLEETD_REDACT_FIELDS replacing the defaults', async () => {
    const log = capturedLog();
    const server = await startTestServer({ slowRequestMs: 0 }, { logger: log.logger, env: { FLEETD_REDACT_FIELDS: 'ssn,creditCard' } });
    try {
      assert.equal((await server.api.get('/v1/tasks?status=queued&ssn=123-45-6789&creditCard=4111-1111-1111-1111')).status, 400);
      const slow = log.lines().find((l) => l.msg === 'slow request' && String(l.url).startsWith('/v1/tasks?'))!;
      assert.equal(slow.url, '/v1/tasks?status=queued&ssn=[redacted]&creditCard=[redacted]');
      server.app.log.info({ payload: { ssn: '123-45-6789', password: 'visible-now' } }, 'configured');
      const line = log.lines().find((l) => l.msg === 'configured')!;
      assert.deepEqual(line.payload, { ssn: '[redacted]', password: 'visible-now' });
      assert.ok(!log.text().includes('123-45-6789'));
      assert.ok(!log.text().includes('4111-1111-1111-1111'), 'the card number is in no line');
    } finally {
      await server.stop();
    }
  });

  it('refuses a setting that is not a list of field names', async () => {
    for (const bad of ['password,,token', 'a b', 'x;y', ',']) {
      await assert.rejects(startTestServer({}, { env: { FLEETD_REDACT_FIELDS: bad } }), /invalid setting FLEETD_REDACT_FIELDS: .* is not field names separated by commas/);
    }
  });

  it('builds paths for every level down to four, and masks only the named query parameters', () => {
    assert.deepEqual(redactPaths(['token']), ['token', '*.token', '*.*.token', '*.*.*.token', '*.*.*.*.token']);
    assert.equal(redactPaths(['x-api-key'])[1], '*["x-api-key"]');
    assert.equal(redactUrl('/v1/x?Password=a&b=c&password', ['password']), '/v1/x?Password=[redacted]&b=c&password');
    assert.equal(redactUrl('/v1/x', ['password']), '/v1/x');
  });
});
