/** One event as the window keeps it: its payload is made (and serialised) only if a resume asks for it. */
export interface RetainedEvent {
  seq: number;
  name: string;
  topics: string[];
  at: string;
  data: () => unknown;
  /** The namespace of what it is about, for sockets that see only some (see event-stream.ts, sees). */
  namespace?: string | null;
  /** About how many bytes it holds on to (its payload is kept by reference until it leaves). */
  bytes: number;
}

/**
 * The last events of a node's observer stream, for subscriptions that resume after a sequence
 * number: at most `maxEvents`, and at most `maxBytes` of what they hold (a task's streamed output
 * makes large events), the oldest leaving first.
 */
export class EventWindow {
  private events: RetainedEvent[] = [];
  private head = 0;
  private bytes = 0;

  constructor(
    readonly maxEvents: number,
    readonly maxBytes: number,
  ) {}

  push(event: RetainedEvent): void {
    if (this.maxEvents === 0) return;
    this.events.push(event);
    this.bytes += event.bytes;
    while (this.events.length - this.head > this.maxEvents || (this.bytes > this.maxBytes && this.events.length - this.head > 1)) {
      this.bytes -= this.events[this.head].bytes;
      this.events[this.head++] = undefined as unknown as RetainedEvent;
    }
    // Dropping the departed from the front now and then keeps push O(1) on average.
    if (this.head > 1_024 && this.head * 2 > this.events.length) {
      this.events = this.events.slice(this.head);
      this.head = 0;
    }
  }

  /** The events after `since`, oldest first, and the oldest number still held (head + 1 when empty). */
  after(since: number, head: number): { events: RetainedEvent[]; oldest: number } {
    const held = this.events.slice(this.head);
    const oldest = held.length > 0 ? held[0].seq : head + 1;
    // Numbers only grow: the first one after `since` is found by bisection.
    let lo = 0;
    let hi = held.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (held[mid].seq <= since) lo = mid + 1;
      else hi = mid;
    }
    return { events: held.slice(lo), oldest };
  }
}
