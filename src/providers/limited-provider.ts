import { setTimeout as sleep } from 'node:timers/promises';
import { retryDelay } from '../core/backoff.js';
import { CircuitBreaker } from '../limits/circuit-breaker.js';
import { RateWindow } from '../limits/rate-window.js';
import { Semaphore } from '../limits/semaphore.js';
import { ProviderError, estimateTokens, type ChatRequest, type ChatResult, type EmbedRequest, type EmbedResult, type Provider } from './provider.js';

export interface ProviderLimits {
  /** Requests in flight at once. */
  maxConcurrent: number;
  /** Requests started in any sliding minute; 0 for no limit. */
  requestsPerMinute: number;
  /** Tokens (estimated from the input before the call) in any sliding minute; 0 for no limit. */
  tokensPerMinute: number;
  /** Longest wait for one HTTP call, in ms. */
  timeoutMs: number;
  /** Extra tries of a call that failed with 429, 5xx, a timeout or a broken reply. */
  retries: number;
  /** Base backoff between tries, in ms, doubled each time (or the provider's Retry-After, if longer). */
  backoffMs: number;
  /** Consecutive failed calls that open the circuit breaker. */
  breakerFailures: number;
  /** How long the breaker stays open, in ms. */
  breakerOpenMs: number;
}

export const defaultProviderLimits: ProviderLimits = {
  maxConcurrent: 16,
  requestsPerMinute: 0,
  tokensPerMinute: 0,
  timeoutMs: 60_000,
  retries: 2,
  backoffMs: 500,
  breakerFailures: 5,
  breakerOpenMs: 30_000,
};

/** A snapshot of one provider's limits at work, for /v1/stats and tests. */
export interface ProviderUsage {
  name: string;
  inFlight: number;
  waiting: number;
  requestsLastMinute: number;
  tokensLastMinute: number;
  circuit: string;
  calls: number;
  failures: number;
}

/**
 * Wraps a provider in its limits. Limits are held here, once per provider per server — never per
 * worker or per pipeline — so that every step in the process shares the same budget.
 * Order of a call: circuit breaker → concurrency slot → request and token windows → the call with
 * its timeout → on a retryable failure, back off (honouring Retry-After) and go round again.
 */
export class LimitedProvider implements Provider {
  readonly name: string;
  readonly breaker: CircuitBreaker;
  private readonly slots: Semaphore;
  private readonly requests?: RateWindow;
  private readonly tokens?: RateWindow;
  private calls = 0;
  private failures = 0;

  constructor(
    private readonly inner: Provider,
    readonly limits: ProviderLimits,
    private readonly now: () => number = Date.now,
  ) {
    this.name = inner.name;
    this.slots = new Semaphore(limits.maxConcurrent);
    if (limits.requestsPerMinute > 0) this.requests = new RateWindow(limits.requestsPerMinute);
    if (limits.tokensPerMinute > 0) this.tokens = new RateWindow(limits.tokensPerMinute);
    this.breaker = new CircuitBreaker({ failureThreshold: limits.breakerFailures, openMs: limits.breakerOpenMs, now });
  }

  chat(request: ChatRequest, signal: AbortSignal): Promise<ChatResult> {
    const tokens = estimateTokens(request.messages.map((m) => m.content)) + (request.maxTokens ?? 0);
    return this.call(tokens, signal, (s) => this.inner.chat(request, s));
  }

  embed(request: EmbedRequest, signal: AbortSignal): Promise<EmbedResult> {
    return this.call(estimateTokens(request.input), signal, (s) => this.inner.embed(request, s));
  }

  usage(): ProviderUsage {
    const now = this.now();
    return {
      name: this.name,
      inFlight: this.slots.inUse,
      waiting: this.slots.queued,
      requestsLastMinute: this.requests?.inUse(now) ?? 0,
      tokensLastMinute: this.tokens?.inUse(now) ?? 0,
      circuit: this.breaker.state,
      calls: this.calls,
      failures: this.failures,
    };
  }

  private async call<T>(tokens: number, signal: AbortSignal, run: (signal: AbortSignal) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.once(tokens, signal, run);
      } catch (err) {
        if (signal.aborted || !(err instanceof ProviderError) || !err.retryable || err.details.kind === 'circuit_open') throw err;
        if (attempt > this.limits.retries) throw err;
        const backoff = retryDelay(attempt, this.limits.backoffMs, 60_000);
        await sleep(Math.max(backoff, err.details.retryAfterMs ?? 0), undefined, { signal });
      }
    }
  }

  private async once<T>(tokens: number, signal: AbortSignal, run: (signal: AbortSignal) => Promise<T>): Promise<T> {
    if (!this.breaker.tryPass()) {
      throw new ProviderError(`${this.name}: circuit open after repeated failures`, {
        provider: this.name,
        retryable: true,
        retryAfterMs: this.breaker.retryInMs(),
        kind: 'circuit_open',
      });
    }
    const release = await this.slots.acquire(signal);
    try {
      const now = this.now();
      const wait = Math.max(this.requests?.reserve(1, now) ?? 0, this.tokens?.reserve(tokens, now) ?? 0);
      if (wait > 0) await sleep(wait, undefined, { signal });
      this.calls++;
      const timeout = AbortSignal.timeout(this.limits.timeoutMs);
      try {
        const result = await run(AbortSignal.any([signal, timeout]));
        this.breaker.recordSuccess();
        return result;
      } catch (err) {
        if (signal.aborted) throw err;
        this.failures++;
        const failure = timeout.aborted
          ? new ProviderError(`${this.name}: no answer within ${this.limits.timeoutMs} ms`, { provider: this.name, retryable: true, kind: 'timeout' })
          : err;
        // Only failures that say the provider is unwell count towards opening the circuit; a 400 is our fault.
        if (!(failure instanceof ProviderError) || failure.retryable) this.breaker.recordFailure();
        else this.breaker.recordSuccess();
        throw failure;
      }
    } finally {
      release();
    }
  }
}
