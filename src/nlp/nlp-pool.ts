import { Piscina } from 'piscina';
import type { IntakeResult } from './nlp-worker.js';

// The worker is loaded by file name, which no import rewriting reaches: run from source (tsx, the
// tests) it is the .ts file beside this one, built it is the .js file.
const workerFile = new URL(import.meta.url.endsWith('.ts') ? './nlp-worker.ts' : './nlp-worker.js', import.meta.url).href;

/**
 * NLP off the event loop: one worker thread (the model is loaded there once, lazily, on the first
 * request), so that parsing text never adds to the API's event-loop lag. The thread is started on
 * the first request, not at server start.
 */
export class NlpPool {
  private pool?: Piscina;

  analyse(text: string, capabilities: string[], signal?: AbortSignal): Promise<IntakeResult> {
    this.pool ??= new Piscina({
      filename: workerFile,
      minThreads: 0,
      maxThreads: 1,
      idleTimeout: 10 * 60_000,
      // Bounded, but above the pipeline lane (steps in flight) a server is likely to be given.
      maxQueue: 10_000,
    });
    return this.pool.run({ text, capabilities, now: Date.now() }, { signal });
  }

  async close(): Promise<void> {
    await this.pool?.destroy();
  }
}
