/**
 * A task change that a timer makes on its own, with no request: a delay running out, or a lease
 * expiring. A fuzzer that checks "a refused request changes nothing" allows these.
 */
export function timerMoved(before: { status: string; runAt: string; leaseExpiresAt: string | null }, after: { status: string }, now: number): boolean {
  if (before.status === 'scheduled' && Date.parse(before.runAt) <= now) return after.status === 'queued';
  if (before.status === 'leased' && Date.parse(before.leaseExpiresAt!) <= now) return ['queued', 'scheduled', 'dead'].includes(after.status);
  return false;
}
