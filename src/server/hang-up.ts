import type { ServerResponse } from 'node:http';
import type { HangUp } from '../core/hang-up.js';

/**
 * A reply's client hanging up: aborted once the connection closes before the reply was sent, or
 * when the route gives up on the wait itself (`abort`). Nothing is listened to on the connection
 * until a wait asks, so a claim answered at once costs one small object.
 */
export class ConnectionHangUp implements HangUp {
  private listeners: (() => void)[] = [];
  private abandoned = false;

  constructor(private readonly res: ServerResponse) {}

  get aborted(): boolean {
    return this.abandoned || (this.res.destroyed && !this.res.writableEnded);
  }

  addEventListener(_type: 'abort', listener: () => void): void {
    if (this.listeners.length === 0) this.res.once('close', this.onClose);
    this.listeners.push(listener);
  }

  removeEventListener(_type: 'abort', listener: () => void): void {
    const at = this.listeners.indexOf(listener);
    if (at < 0) return;
    this.listeners.splice(at, 1);
    if (this.listeners.length === 0) this.res.off('close', this.onClose);
  }

  /** The route will not read what the wait finds (its other half failed): end the wait now. */
  abort(): void {
    if (this.abandoned) return;
    this.abandoned = true;
    this.fire();
  }

  private readonly onClose = (): void => {
    // A close after the reply went out is the connection ending normally, not a hang-up.
    if (!this.res.writableEnded) this.fire();
  };

  private fire(): void {
    const listeners = this.listeners;
    if (listeners.length === 0) return;
    this.listeners = [];
    this.res.off('close', this.onClose);
    for (const listener of listeners) listener();
  }
}
