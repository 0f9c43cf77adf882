import { FleetError } from '../domain/errors.js';

/**
 * At most `max` holders at once; others wait in FIFO order. The wait queue is bounded too: past
 * `maxWaiting`, `acquire` fails at once rather than letting memory grow without limit.
 */
export class Semaphore {
  private active = 0;
  private readonly waiting: { grant: () => void; reject: (err: unknown) => void; signal?: AbortSignal; onAbort?: () => void }[] = [];

  constructor(
    readonly max: number,
    readonly maxWaiting: number = Infinity,
  ) {
    if (!(max >= 1)) throw new RangeError(`a concurrency limit must be at least 1, got ${max}`);
  }

  get inUse(): number {
    return this.active;
  }

  get queued(): number {
    return this.waiting.length;
  }

  /** Resolves with the release function once a slot is free. */
  acquire(signal?: AbortSignal): Promise<() => void> {
    signal?.throwIfAborted();
    if (this.active < this.max) {
      this.active++;
      return Promise.resolve(this.releaser());
    }
    if (this.waiting.length >= this.maxWaiting) {
      return Promise.reject(new FleetError('FLEETD_ERR_RATE_LIMITED', `more than ${this.maxWaiting} callers are already waiting`));
    }
    return new Promise((resolve, reject) => {
      const entry: (typeof this.waiting)[number] = { grant: () => resolve(this.releaser()), reject, signal };
      if (signal) {
        entry.onAbort = () => {
          const i = this.waiting.indexOf(entry);
          if (i >= 0) this.waiting.splice(i, 1);
          reject(signal.reason);
        };
        signal.addEventListener('abort', entry.onAbort, { once: true });
      }
      this.waiting.push(entry);
    });
  }

  async run<T>(fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    const release = await this.acquire(signal);
    try {
      return await fn();
    } finally {
      release();
    }
  }

  private releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiting.shift();
      if (next) {
        if (next.onAbort) next.signal!.removeEventListener('abort', next.onAbort);
        next.grant();
      } else this.active--;
    };
  }
}
