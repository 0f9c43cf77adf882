/** Slices a round is cut into: a tick visits about a hundredth of the entries. */
const SLICES = 100;
/** Shortest time between two ticks, whatever the period. */
const MIN_TICK_MS = 10;
/** A round behind its pace catches up at most this many slices a tick. */
const CATCH_UP_SLICES = 4;

/**
 * Visits every entry of a map once a period, a slice at a time. Work done for every socket at once
 * held the event loop for as long as it took: a ping to each of 10,000 sockets took 130 ms in one
 * turn every 10 s, and their 10,000 pongs came back together, and every task in flight waited. Here a round starts every period and a tick
 * every period / 100 visits the share of the entries that time has come for, so a tick costs about
 * a hundredth of a round. A round paces itself by the clock, not by its ticks: one whose ticks ran
 * late (a busy event loop), or whose map grew meanwhile (10,000 agents reconnecting), catches up,
 * but at no more than four hundredths a tick, so that catching up is no stall either. Each entry is
 * so visited about once a period: a round that fell behind by a whole map catches up in a third of
 * a period, its ticks on time. (The next round, which may then begin at once, visits each entry at
 * its own pace again.)
 *
 * The round walks the map itself (a Map iterates in insertion order and sees what is added while it
 * iterates): an entry added during a round is visited at its end, and one deleted before its turn
 * is not visited.
 */
export class Sweep<K, V> {
  private timer: NodeJS.Timeout | undefined;
  private round: Iterator<[K, V]> | undefined;
  private roundStartedAt = Number.NEGATIVE_INFINITY;
  private visited = 0;

  constructor(
    private readonly entries: Map<K, V>,
    private readonly periodMs: number,
    private readonly visit: (key: K, value: V) => void,
    private readonly now: () => number = () => performance.now(),
  ) {}

  start(): void {
    this.timer ??= setInterval(() => this.tick(), Math.max(MIN_TICK_MS, Math.floor(this.periodMs / SLICES)));
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
    if (this.round && !this.step(this.round, now)) this.round = undefined;
    if (!this.round && now - this.roundStartedAt >= this.periodMs) {
      this.roundStartedAt = now;
      this.visited = 0;
      this.round = this.entries.entries();
      if (!this.step(this.round, now)) this.round = undefined;
    }
  }

  /** Visits what the round is due at `now`, a slice's worth or a catch-up's; false once the round is over. */
  private step(round: Iterator<[K, V]>, now: number): boolean {
    const size = this.entries.size;
    const elapsed = now - this.roundStartedAt;
    const due = Math.ceil(size * Math.min(1, elapsed / this.periodMs + 1 / SLICES));
    // Past its period a round goes on to its end whatever `due` says, which does not count entries
    // that took the places of visited ones deleted since.
    const late = elapsed >= this.periodMs;
    const most = Math.max(1, Math.ceil((size * CATCH_UP_SLICES) / SLICES));
    for (let n = 0; n < most && (this.visited < due || late); n++) {
      const next = round.next();
      if (next.done) return false;
      this.visited++;
      this.visit(next.value[0], next.value[1]);
    }
    return true;
  }
}
