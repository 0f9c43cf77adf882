/**
 * A maintenance service driven by deadlines rather than polling: `runOnce` does one bounded batch
 * of work and says when the next piece of work falls due; the service sleeps until then. Writers
 * that create an earlier deadline (a short lease, a near runAt) call `poke` to wake it sooner.
 *
 * `maxSleepMs` bounds the sleep so that deadlines created by other nodes sharing the store are
 * still met. The first run waits a random delay, because nodes restarted together should not
 * all sweep at the same instant.
 */
export abstract class DeadlineService {
  private timer: NodeJS.Timeout | undefined;
  private dueAt = Infinity;
  private running = false;
  private rerun = false;
  private stopped = true;

  constructor(
    readonly name: string,
    protected readonly now: () => number,
    private readonly maxSleepMs: number,
    private readonly onError: (err: unknown, service: string) => void,
  ) {}

  /** One bounded batch. Returns whether more work is due now, and when the next deadline is. */
  abstract runOnce(now: number): Promise<{ more: boolean; next: number | null }>;

  start(): void {
    this.stopped = false;
    this.schedule(this.now() + Math.floor(Math.random() * 50));
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.dueAt = Infinity;
  }

  /** Something now falls due at `at`: run by then. */
  poke(at: number): void {
    if (this.stopped) return;
    if (this.running) {
      if (at <= this.now()) this.rerun = true;
      else if (at < this.dueAt) this.schedule(at);
      return;
    }
    if (at < this.dueAt) this.schedule(at);
  }

  private schedule(at: number): void {
    if (this.stopped) return;
    if (this.timer) clearTimeout(this.timer);
    const capped = Math.min(at, this.now() + this.maxSleepMs);
    this.dueAt = capped;
    this.timer = setTimeout(() => void this.tick(), Math.max(0, capped - this.now()));
    this.timer.unref();
  }

  private async tick(): Promise<void> {
    this.timer = undefined;
    this.dueAt = Infinity;
    this.running = true;
    let next: number;
    try {
      const result = await this.runOnce(this.now());
      next = result.more ? this.now() : (result.next ?? Infinity);
    } catch (err) {
      this.onError(err, this.name);
      next = this.now() + 1_000;
    } finally {
      this.running = false;
    }
    if (this.rerun) {
      this.rerun = false;
      next = this.now();
    }
    this.schedule(Math.min(next, this.dueAt));
  }
}
