import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SimulatedProvider } from '../src/providers/simulated.js';

test('the simulated provider answers within its latency range, fails its share of calls, and embeds alike texts alike', async () => {
  let seed = 1;
  const random = () => ((seed = (seed * 16_807) % 2_147_483_647) / 2_147_483_647);
  const sim = new SimulatedProvider({ name: 'sim', latency: { minMs: 5, maxMs: 30, distribution: 'lognormal' }, failureRate: 0.3, dimensions: 16, random });
  const signal = new AbortController().signal;
  let failures = 0;
  for (let i = 0; i < 40; i++) {
    const started = performance.now();
    try {
      const reply = await sim.chat({ messages: [{ role: 'user', content: `complaint ${i}` }] }, signal);
      assert.match(reply.content, /complaint/);
    } catch (err) {
      assert.equal((err as { details: { status: number } }).details.status, 503);
      failures++;
    }
    assert.ok(performance.now() - started >= 4, 'no call is faster than minMs');
  }
  assert.ok(failures > 3 && failures < 25, `${failures} of 40 failed at a 30 % rate`);
  const free = new SimulatedProvider({ name: 'sim', latency: { minMs: 0, maxMs: 0 }, failureRate: 0, dimensions: 16 });
  const { vectors } = await free.embed({ input: ['bins not collected on Elm Street', 'Elm Street bins not collected', 'noise at night'] }, signal);
  const dot = (a: number[], b: number[]) => a.reduce((s, x, i) => s + x * b[i], 0);
  assert.ok(dot(vectors[0], vectors[1]) > dot(vectors[0], vectors[2]));
});
