import type { AgentMessage } from './wire.js';
import { FleetApiError } from './errors.js';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

/** How the reporter sends one message: over the agent's socket when it is open, else over HTTP. */
export type SendActivity = (message: Extract<AgentMessage, { type: 'progress' | 'logs' | 'output' }>, path: string, body: object) => Promise<void>;

type Item = { kind: 'progress'; progress: number; message?: string } | { kind: 'log'; level: LogLevel; message: string } | { kind: 'output'; text: string };

/** Most lines in one logs message (the server's limit). */
const LINES_PER_MESSAGE = 1_000;
/**
 * Output is sent in pieces of at most this many UTF-16 units: at most 3 UTF-8 bytes each, so a piece
 * stays under the server's default chunk limit (64 KiB) however it is written.
 */
const OUTPUT_PIECE = 16_384;
/** Refusals after which nothing more about the task will be taken: stop sending. */
const FINAL = new Set(['FLEETD_ERR_LEASE_LOST', 'FLEETD_ERR_TASK_STATE', 'FLEETD_ERR_NOT_FOUND']);

/**
 * A running task's progress, log lines and output on their way to fleetd. Calls only queue: what
 * was queued in one tick leaves as one message per run of the same kind (the lines together, the
 * output joined, only the latest of consecutive progress reports), in the order it was reported,
 * and the next batch waits for the last one's answer, so that the server stores them in order.
 */
export class ActivityReporter {
  private queue: Item[] = [];
  private sending: Promise<void> | undefined;
  private closed = false;

  constructor(
    private readonly taskId: number,
    private readonly sendMessage: SendActivity,
    private readonly warn: (err: unknown) => void,
  ) {}

  progress(progress: number, message?: string): void {
    if (typeof progress !== 'number' || !(progress >= 0 && progress <= 1)) throw new RangeError(`progress must be a number from 0 to 1, not ${progress}`);
    this.push({ kind: 'progress', progress, ...(message === undefined ? {} : { message: String(message) }) });
  }

  log(message: string, level: LogLevel = 'info'): void {
    this.push({ kind: 'log', level, message: String(message) });
  }

  output(text: string): void {
    if (text === '') return;
    this.push({ kind: 'output', text: String(text) });
  }

  /** Resolves once everything reported so far has been answered (accepted, or refused and warned about). */
  async flush(): Promise<void> {
    while (this.sending) await this.sending;
  }

  /** Takes no more: the task is done (its completion waits for flush() first). */
  close(): void {
    this.closed = true;
  }

  private push(item: Item): void {
    if (this.closed) return;
    this.queue.push(item);
    this.sending ??= new Promise<void>((resolve) => setImmediate(resolve)).then(() => this.drain());
  }

  private async drain(): Promise<void> {
    try {
      while (this.queue.length > 0 && !this.closed) {
        const batch = this.queue;
        this.queue = [];
        for (const message of messagesOf(this.taskId, batch)) {
          const { type, id: _id, ...body } = message;
          try {
            await this.sendMessage(message, `/v1/tasks/${this.taskId}/${type}`, body);
          } catch (err) {
            this.warn(err);
            if (err instanceof FleetApiError && FINAL.has(err.code)) {
              this.closed = true;
              this.queue = [];
              return;
            }
          }
        }
      }
    } finally {
      this.sending = undefined;
    }
  }
}

/** The batch as messages: consecutive items of one kind together, in order. */
function messagesOf(id: number, items: Item[]): Extract<AgentMessage, { type: 'progress' | 'logs' | 'output' }>[] {
  const out: Extract<AgentMessage, { type: 'progress' | 'logs' | 'output' }>[] = [];
  for (let i = 0; i < items.length; ) {
    const kind = items[i].kind;
    let j = i;
    while (j < items.length && items[j].kind === kind) j++;
    const run = items.slice(i, j);
    if (kind === 'progress') {
      const last = run[run.length - 1] as Extract<Item, { kind: 'progress' }>;
      out.push({ type: 'progress', id, progress: last.progress, ...(last.message === undefined ? {} : { message: last.message }) });
    } else if (kind === 'log') {
      const lines = (run as Extract<Item, { kind: 'log' }>[]).map(({ level, message }) => ({ level, message }));
      for (let k = 0; k < lines.length; k += LINES_PER_MESSAGE) out.push({ type: 'logs', id, lines: lines.slice(k, k + LINES_PER_MESSAGE) });
    } else {
      const text = (run as Extract<Item, { kind: 'output' }>[]).map((r) => r.text).join('');
      for (let k = 0; k < text.length; ) {
        let end = Math.min(text.length, k + OUTPUT_PIECE);
        // Never between the two halves of a surrogate pair: each piece must be valid UTF-16 on its own.
        if (end < text.length && /[\uD800-\uDBFF]/.test(text[end - 1])) end--;
        out.push({ type: 'output', id, text: text.slice(k, end) });
        k = end;
      }
    }
    i = j;
  }
  return out;
}
