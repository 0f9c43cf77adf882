import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Dependencies } from '../src/domain/dependencies.js';

/** The registry that turns connections' reports into one log line per outage, /readyz and the metrics. */
describe('dependencies', () => {
  const setup = () => {
    const lines: { msg: string; obj: Record<string, unknown> }[] = [];
    let now = 1_000;
    const deps = new Dependencies({ warn: (obj, msg) => lines.push({ msg: msg ?? '', obj: obj as Record<string, unknown> }) }, () => now);
    return { deps, lines, advance: (ms: number) => (now += ms) };
  };

  it('logs an outage once however many connections report it, and its end once all are back', () => {
    const { deps, lines, advance } = setup();
    const pool = deps.reporter('postgres', 'pool');
    const listen = deps.reporter('postgres', 'listen');
    pool.down('ECONNREFUSED');
    pool.down('ECONNREFUSED');
    listen.down('Connection terminated unexpectedly');
    assert.deepEqual(lines.map((l) => l.msg), ['postgres is unavailable; retrying with backoff']);
    assert.equal(deps.isUp('postgres'), false);
    advance(2_500);
    pool.up();
    assert.equal(deps.isUp('postgres'), false, 'still down while the LISTEN connection is');
    listen.up();
    assert.deepEqual(lines.map((l) => l.msg), ['postgres is unavailable; retrying with backoff', 'postgres is available again']);
    assert.equal(lines[1].obj.outageSeconds, 2.5);
    assert.deepEqual(deps.status().postgres, { up: true, since: 3_500, reason: null, outages: 1, reconnects: 2 });
  });

  it('keeps each service apart, and reports an unused one as absent', () => {
    const { deps } = setup();
    deps.reporter('redis', 'cache').down('the connection closed');
    deps.reporter('postgres', 'pool');
    const status = deps.status();
    assert.equal(status.redis?.up, false);
    assert.equal(status.redis?.reason, 'the connection closed');
    assert.equal(status.postgres?.up, true);
    assert.equal(new Dependencies({ warn() {} }).status().redis, undefined);
  });

  it('ignores an up from a connection that was never down', () => {
    const { deps, lines } = setup();
    deps.reporter('redis', 'bus-pub').up();
    assert.deepEqual(lines, []);
    assert.equal(deps.status().redis?.reconnects, 0);
  });
});
