import type { AnyEventHandler, Bus, EventHandler, EventName, FleetEvents } from './bus.js';

/**
 * The in-process bus of a single node. Handlers run synchronously in subscription order; a handler
 * that throws is reported and does not stop the others or the publisher.
 */
export class LocalBus implements Bus {
  private readonly handlers = new Map<EventName, Set<(event: unknown) => void>>();
  private readonly allHandlers = new Set<AnyEventHandler>();

  constructor(private readonly onHandlerError: (err: unknown, name: EventName) => void = () => {}) {}

  publish<K extends EventName>(name: K, event: FleetEvents[K]): void {
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
        handler(name, event);
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
