import type { AnyEventHandler, Bus, EventHandler, EventName, FleetEvents } from './bus.js';

/**
 * The in-process bus of a single node. Handlers run synchronously in subscription order; a handler
 * that throws is reported and does not stop the others or the publisher. An event a handler
 * publishes is handled once every handler has had the event it follows from, before the outer
 * publish returns: so everyone hears a task claimed before the lock its claim took.
 */
export class LocalBus implements Bus {
  private readonly handlers = new Map<EventName, Set<(event: unknown) => void>>();
  private readonly allHandlers = new Set<AnyEventHandler>();
  /** While handlers run: the events published meanwhile, in order. */
  private pending: [EventName, unknown][] | undefined;

  constructor(private readonly onHandlerError: (err: unknown, name: EventName) => void = () => {}) {}

  publish<K extends EventName>(name: K, event: FleetEvents[K]): void {
    if (this.pending) {
      this.pending.push([name, event]);
      return;
    }
    const pending: [EventName, unknown][] = [[name, event]];
    this.pending = pending;
    try {
      for (let i = 0; i < pending.length; i++) this.deliver(pending[i][0], pending[i][1]);
    } finally {
      this.pending = undefined;
    }
  }

  private deliver(name: EventName, event: unknown): void {
    const set = this.handlers.get(name);
    if (set) {
      for (const handler of set) {
        try {
          handler(event);
        } catch (err) {
          this.onHandlerError(err, name);
        }
      }
    }
    for (const handler of this.allHandlers) {
      try {
        handler(name, event as FleetEvents[typeof name]);
      } catch (err) {
        this.onHandlerError(err, name);
      }
    }
  }

  subscribe<K extends EventName>(name: K, handler: EventHandler<K>): () => void {
    let set = this.handlers.get(name);
    if (!set) {
      set = new Set();
      this.handlers.set(name, set);
    }
    const h = handler as (event: unknown) => void;
    set.add(h);
    return () => set.delete(h);
  }

  subscribeAll(handler: AnyEventHandler): () => void {
    this.allHandlers.add(handler);
    return () => this.allHandlers.delete(handler);
  }

  async close(): Promise<void> {
    this.handlers.clear();
    this.allHandlers.clear();
  }
}
