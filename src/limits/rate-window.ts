/**
 * A rate limit of `limit` units (requests, or tokens) per `windowMs`, enforced over every sliding
 * window: whatever the timing, no span of `windowMs` ever holds more than `limit` granted units.
 *
 * Why not a classic token bucket: a bucket of capacity N refilled at N per minute lets 2N through
 * in one minute (a full bucket spent at once, then a minute of refill). Providers count the
 * sliding minute, so this keeps the log of recent grants instead, and a caller that would exceed it
 * is told how long to wait — it is granted at that future time, which the log already counts.
 */
export class RateWindow {
  /** Grants in time order: when each takes effect and how many units it used. */
  private readonly grants: { at: number; units: number }[] = [];
  private head = 0;
  private used = 0;

  constructor(
    readonly limit: number,
    readonly windowMs: number = 60_000,
  ) {
    if (!(limit > 0)) throw new RangeError(`a rate limit must be positive, got ${limit}`);
  }

  /**
   * Books `units` at the earliest time ≥ now that keeps every window within the limit, and returns
   * how many ms from now that is (0: go at once). A request bigger than the whole limit is booked
   * as if it were exactly the limit, so that it waits for an empty window rather than forever.
   */
  reserve(units: number, now: number): number {
    const cost = Math.min(Math.max(units, 0), this.limit);
    this.forget(now);
    let at = Math.max(now, this.lastAt());
    // Drop the oldest grants from the window ending at `at` until this one fits.
    let i = this.head;
    let inWindow = this.used;
    while (i < this.grants.length && this.grants[i].at <= at - this.windowMs) inWindow -= this.grants[i++].units;
    while (inWindow + cost > this.limit) {
      const oldest = this.grants[i++];
      inWindow -= oldest.units;
      at = Math.max(at, oldest.at + this.windowMs);
    }
    this.grants.push({ at, units: cost });
    this.used += cost;
    return at - now;
  }

  /** Units granted in the window ending now. */
  inUse(now: number): number {
    this.forget(now);
    let n = 0;
    for (let i = this.head; i < this.grants.length; i++) if (this.grants[i].at <= now) n += this.grants[i].units;
    return n;
  }

  private lastAt(): number {
    return this.grants.length > this.head ? this.grants[this.grants.length - 1].at : -Infinity;
  }

  /** Grants that left every window that can still matter are dropped, so memory stays bounded by the limit. */
  private forget(now: number): void {
    while (this.head < this.grants.length && this.grants[this.head].at <= now - this.windowMs) {
      this.used -= this.grants[this.head++].units;
    }
    if (this.head > 1024 && this.head * 2 > this.grants.length) {
      this.grants.splice(0, this.head);
      this.head = 0;
    }
  }
}
