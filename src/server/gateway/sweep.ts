/** Slices a round is cut into: a tick visits about a hundredth of the entries. */
const SLICES = 100;
/** Shortest time between two ticks, whatever the period. */
const MIN_TICK_MS = 10;
/** A round behind its pace catches up at most this many slices' worth a tick. */
const CATCH_UP_SLICES = 4;

/**
 * Visits every entry of a map once a period, a slice at a time. Work done for every socket at once
 * held the event loop for as long as it took: a ping to each of 10,000 sockets took 130 ms in one
 * turn every 10 s, and their 10,000 pongs came back together, and every task in flight waited.
 *
 * A round starts every period with the keys the map holds then; entries added during it wait for
 * the next, and entries deleted before their turn are skipped. (A round that walked the live map
 * would never end while sockets came and went faster than it visited them, and would never come
 * back to the first.) A tick, every period / 100 (10 ms at the least), visits the share of the
 * round that time has come for. A round paces itself by the clock, not by its ticks: one whose
 * ticks ran late (a busy event loop) catches up, at no more than four slices a tick, so that
 * catching up is no stall either. Each entry is so visited about once a period.
 */
export class Sweep<K, V> {
  private timer: NodeJS.Timeout | undefined;
  /** The keys of the round in progress, and how many of them it has visited. */
  private round: K[] | undefined;
  private visited = 0;
  private roundStartedAt = Number.NEGATIVE_INFINITY;
  private readonly tickMs: number;

  constructor(
    private readonly entries: Map<K, V>,
    private readonly periodMs: number,
    private readonly visit: (key: K, value: V) => void,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.tickMs = Math.max(MIN_TICK_MS, Math.floor(periodMs / SLICES));
  }

  start(): void {
    this.timer ??= setInterval(() => this.tick(), this.tickMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    this.round = undefined;
  }

  /** @internal Runs one tick at once (the timer's work): for tests. */
  tick(): void {
    const now = this.now();
    if (this.round) this.step(this.round, now);
    if (!this.round && now - this.roundStartedAt >= this.periodMs) {
      this.roundStartedAt = now;
      this.round = [...this.entries.keys()];
      this.visited = 0;
      this.step(this.round, now);
    }
  }

  /** Visits what the round is due at `now`, a tick's share or a catch-up's; ends the round once all are visited. */
  private step(round: K[], now: number): void {
    const tickShare = this.tickMs / this.periodMs;
    const due = Math.ceil(round.length * Math.min(1, (now - this.roundStartedAt) / this.periodMs + tickShare));
    const until = Math.min(due, this.visited + Math.max(1, Math.ceil(round.length * tickShare * CATCH_UP_SLICES)));
    for (; this.visited < until; this.visited++) {
      const key = round[this.visited];
      if (this.entries.has(key)) this.visit(key, this.entries.get(key) as V);
    }
    if (this.visited >= round.length) this.round = undefined;
  }
}
