/** One event as the window keeps it: its payload is made (and serialised) only if a resume asks for it. */
export interface RetainedEvent {
  seq: number;
  name: string;
  topics: string[];
  at: string;
  data: () => unknown;
}

/**
 * The last `size` events of a node's observer stream, for subscriptions that resume after a
 * sequence number. A ring: memory is bounded by the count, whatever the topics.
 */
export class EventWindow {
  private readonly ring: (RetainedEvent | undefined)[];
  private next = 0;

  constructor(readonly size: number) {
    this.ring = new Array(size);
  }

  push(event: RetainedEvent): void {
    if (this.size === 0) return;
    this.ring[this.next] = event;
    this.next = (this.next + 1) % this.size;
  }

  /** The events after `since`, oldest first, and the oldest number still held (head + 1 when empty). */
  after(since: number, head: number): { events: RetainedEvent[]; oldest: number } {
    const events: RetainedEvent[] = [];
    let oldest = head + 1;
    for (let i = 0; i < this.size; i++) {
      const event = this.ring[(this.next + i) % this.size];
      if (!event) continue;
      if (event.seq < oldest) oldest = event.seq;
      if (event.seq > since) events.push(event);
    }
    return { events, oldest };
  }
}
