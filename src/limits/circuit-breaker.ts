import { steadyNow } from '../core/clock.js';

export type CircuitState = 'closed' | 'open' | 'half-open';

export interface CircuitBreakerOptions {
  /** Consecutive failures that open the circuit. */
  failureThreshold: number;
  /** How long it stays open, in ms, before one trial call is let through. */
  openMs: number;
  now?: () => number;
}

/**
 * Stops calling a provider that keeps failing. Closed: calls pass, consecutive failures are
 * counted. Open: calls fail at once until `openMs` has passed. Half-open: one trial call passes;
 * its success closes the circuit, its failure opens it again for another `openMs`.
 */
export class CircuitBreaker {
  private failures = 0;
  private openedAt = 0;
  private trialInFlight = false;
  private current: CircuitState = 'closed';

  constructor(private readonly options: CircuitBreakerOptions) {}

  get state(): CircuitState {
    if (this.current === 'open' && this.now() - this.openedAt >= this.options.openMs) this.current = 'half-open';
    return this.current;
  }

  /** Ms until the circuit lets a call through again (0 when it does now). */
  retryInMs(): number {
    return this.state === 'open' ? this.openedAt + this.options.openMs - this.now() : 0;
  }

  /** Whether a call may go now; in half-open, only the first caller gets the trial. */
  tryPass(): boolean {
    const state = this.state;
    if (state === 'closed') return true;
    if (state === 'half-open' && !this.trialInFlight) {
      this.trialInFlight = true;
      return true;
    }
    return false;
  }

  recordSuccess(): void {
    this.failures = 0;
    this.trialInFlight = false;
    this.current = 'closed';
  }

  recordFailure(): void {
    this.trialInFlight = false;
    this.failures++;
    if (this.current === 'half-open' || this.failures >= this.options.failureThreshold) {
      this.current = 'open';
      this.openedAt = this.now();
    }
  }

  private now(): number {
    return (this.options.now ?? steadyNow)();
  }
}
