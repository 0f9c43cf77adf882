/**
 * Milliseconds to wait before try `attempt` (1, 2, …): anywhere in [0, min(maxMs, minMs · 2^attempt)],
 * so that a fleet retrying after one outage does not come back in one wave (the Python SDK's
 * `full_jitter`).
 */
export function fullJitter(attempt: number, minMs: number, maxMs: number): number {
  return Math.random() * Math.min(maxMs, minMs * 2 ** attempt);
}
