import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import fc from 'fast-check';
import { CircuitBreaker } from '../src/limits/circuit-breaker.js';
import { RateWindow } from '../src/limits/rate-window.js';
import { Semaphore } from '../src/limits/semaphore.js';
import { LimitedProvider, defaultProviderLimits } from '../src/providers/limited-provider.js';
import { OpenAiCompatibleProvider } from '../src/providers/openai-compatible.js';
import { ProviderError } from '../src/providers/provider.js';
import { FakeLlm, never } from './fake-llm.js';

const fake = new FakeLlm();
before(() => fake.start());
after(() => fake.stop());

const chat = (text: string) => ({ messages: [{ role: 'user' as const, content: text }] });

test('a limit of 100 per minute never lets 101 through in any sliding minute, whatever the arrivals', () => {
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 0, max: 3_000 }), { minLength: 1, maxLength: 400 }), (gaps) => {
      const window = new RateWindow(100, 60_000);
      let now = 0;
      const granted: number[] = [];
      for (const gap of gaps) {
        now += gap;
        granted.push(now + window.reserve(1, now));
      }
      granted.sort((a, b) => a - b);
      for (let i = 100; i < granted.length; i++) assert.ok(granted[i] - granted[i - 100] >= 60_000, `101 grants within ${granted[i] - granted[i - 100]} ms`);
    }),
  );
});

test('a tokens-per-minute window counts tokens, and a request waits only as long as it must', () => {
  const window = new RateWindow(1_000, 60_000);
  assert.equal(window.reserve(600, 0), 0);
  assert.equal(window.reserve(300, 10_000), 0);
  assert.equal(window.reserve(300, 20_000), 60_000 - 20_000, 'waits until the first 600 leave the window');
  assert.equal(window.inUse(20_000), 900);
});

test('a semaphore never lets more than its maximum in at once', async () => {
  const slots = new Semaphore(3);
  let inside = 0;
  let most = 0;
  await Promise.all(
    Array.from({ length: 20 }, () =>
      slots.run(async () => {
        inside++;
        most = Math.max(most, inside);
        await new Promise((r) => setImmediate(r));
        inside--;
      }),
    ),
  );
  assert.equal(most, 3);
  assert.equal(slots.inUse, 0);
});

test('the circuit opens after repeated failures, fails fast while open, and closes after a successful trial', () => {
  let now = 0;
  const breaker = new CircuitBreaker({ failureThreshold: 3, openMs: 1_000, now: () => now });
  for (let i = 0; i < 3; i++) {
    assert.ok(breaker.tryPass());
    breaker.recordFailure();
  }
  assert.equal(breaker.state, 'open');
  assert.equal(breaker.tryPass(), false);
  now = 1_000;
  assert.equal(breaker.state, 'half-open');
  assert.equal(breaker.tryPass(), true, 'one trial passes');
  assert.equal(breaker.tryPass(), false, 'only one');
  breaker.recordSuccess();
  assert.equal(breaker.state, 'closed');
});

test('the provider stops calling a failing server once its circuit opens', async () => {
  fake.when('BREAKER', { status: 503 }, { status: 503 });
  const provider = new LimitedProvider(new OpenAiCompatibleProvider({ name: 'fake', baseUrl: fake.url, connections: 2 }), {
    ...defaultProviderLimits,
    retries: 0,
    breakerFailures: 2,
    breakerOpenMs: 60_000,
  });
  for (let i = 0; i < 2; i++) await assert.rejects(provider.chat(chat('BREAKER'), new AbortController().signal), (e: ProviderError) => e.details.status === 503);
  const err = await provider.chat(chat('BREAKER'), new AbortController().signal).catch((e) => e);
  assert.ok(err instanceof ProviderError);
  assert.equal(err.details.kind, 'circuit_open');
  assert.equal(fake.seen('BREAKER').length, 2, 'the third call never reached the server');
  assert.equal(provider.usage().circuit, 'open');
});

test('the provider retries 429 and 5xx itself, honouring Retry-After, and reports malformed replies', async () => {
  fake.when('PROVIDER-RETRY', { status: 429, headers: { 'retry-after': '0.3' } }, { status: 502 });
  const provider = new LimitedProvider(new OpenAiCompatibleProvider({ name: 'fake', baseUrl: fake.url, connections: 2 }), {
    ...defaultProviderLimits,
    retries: 2,
    backoffMs: 1,
  });
  const reply = await provider.chat(chat('PROVIDER-RETRY'), new AbortController().signal);
  assert.equal(reply.content, 'reply to: PROVIDER-RETRY');
  const [first, second] = fake.seen('PROVIDER-RETRY');
  assert.ok(second.at - first.at >= 280, `retried after ${second.at - first.at} ms, Retry-After said 300`);

  fake.when('MALFORMED', { body: 'not json' }, { body: '{"choices": []}' }, { body: 'still not json' });
  const err = await provider.chat(chat('MALFORMED'), new AbortController().signal).catch((e) => e);
  assert.equal(err.details.kind, 'malformed');
  assert.equal(fake.seen('MALFORMED').length, 3);
});

test('a call that outlives the provider timeout is abandoned and reported as a timeout', async () => {
  fake.when('PROVIDER-SLOW', { hold: never });
  const provider = new LimitedProvider(new OpenAiCompatibleProvider({ name: 'fake', baseUrl: fake.url, connections: 2 }), {
    ...defaultProviderLimits,
    retries: 0,
    timeoutMs: 100,
  });
  const err = await provider.chat(chat('PROVIDER-SLOW'), new AbortController().signal).catch((e) => e);
  assert.equal(err.details.kind, 'timeout');
});

test('at most maxConcurrent requests reach the provider at once', async () => {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  fake.when('CONCURRENT', ...Array.from({ length: 6 }, () => ({ hold: gate })));
  const provider = new LimitedProvider(new OpenAiCompatibleProvider({ name: 'fake', baseUrl: fake.url, connections: 8 }), {
    ...defaultProviderLimits,
    maxConcurrent: 2,
  });
  const calls = Array.from({ length: 6 }, () => provider.chat(chat('CONCURRENT'), new AbortController().signal));
  await fake.nextRequest('CONCURRENT', 2);
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(fake.seen('CONCURRENT').length, 2);
  assert.equal(provider.usage().waiting, 4);
  release();
  await Promise.all(calls);
  assert.equal(fake.seen('CONCURRENT').length, 6);
});

test('a provider with 2 requests/min sends the third request of the minute only when the window allows', async () => {
  const provider = new LimitedProvider(new OpenAiCompatibleProvider({ name: 'fake', baseUrl: fake.url, connections: 2 }), {
    ...defaultProviderLimits,
    requestsPerMinute: 2,
  });
  const stop = new AbortController();
  await provider.chat(chat('RPM-1'), stop.signal);
  await provider.chat(chat('RPM-2'), stop.signal);
  const third = provider.chat(chat('RPM-3'), stop.signal).catch((e) => e);
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(fake.seen('RPM-3').length, 0, 'the third request waits for the minute to pass');
  assert.equal(provider.usage().requestsLastMinute, 2);
  stop.abort(new Error('enough'));
  assert.equal((await third).name, 'AbortError', 'the waiting call ends when its signal is aborted');
  assert.equal(fake.seen('RPM-3').length, 0);
});
