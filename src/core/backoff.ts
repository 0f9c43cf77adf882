/**
 * Exponential backoff with jitter: base × 2^(attempt−1), capped, then shortened by up to 20 % at
 * random so that tasks failed together do not all come back in the same millisecond.
 */
export function retryDelay(attempt: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  const exponential = Math.min(maxMs, baseMs * 2 ** Math.max(0, Math.min(attempt - 1, 40)));
  return Math.round(exponential * (1 - 0.2 * random()));
}
