/**
 * How far fleetd's clock may move towards the wall clock, per unit of time elapsed: 1 % (36 s an
 * hour). A lease or a delay therefore lasts within 1 % of its length in real time, whatever the
 * wall clock does.
 */
export const CLOCK_SLEW_RATE = 0.01;

/**
 * A clock in epoch milliseconds that never jumps: it advances with the monotonic clock and drifts
 * towards the wall clock by at most `slewRate` of the time elapsed, as NTP slews rather than steps.
 *
 * Why: every deadline fleetd stores (lease expiry, runAt, heartbeat age, lock TTL) is compared with
 * `now`. Read straight from the wall clock, a jump of minutes forward would expire every lease and
 * take every agent offline at once; a jump back would hold leases for minutes past their time. On
 * this clock a jump changes nothing at once; fleetd's timestamps catch up with the new wall time
 * gradually (a 5-minute jump in about 8 hours). On restart the clock starts from the wall clock.
 */
export function steadyClock(
  options: { wall?: () => number; monotonic?: () => number; slewRate?: number } = {},
): () => number {
  const wall = options.wall ?? Date.now;
  const monotonic = options.monotonic ?? (() => performance.now());
  const slewRate = options.slewRate ?? CLOCK_SLEW_RATE;
  let last = monotonic();
  let current = wall();
  return () => {
    const mono = monotonic();
    const elapsed = mono - last;
    last = mono;
    const slew = elapsed * slewRate;
    current += elapsed + Math.max(-slew, Math.min(slew, wall() - current - elapsed));
    return Math.floor(current);
  };
}

/** The process's clock: what fleetd stores and compares its times with. */
export const steadyNow = steadyClock();
