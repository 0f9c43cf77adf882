/**
 * Group commit for one kind of write, as SQLite's GroupCommit does for every write: calls that
 * arrive in the same tick are written together, in one transaction, so that a burst of them costs
 * one commit (one WAL flush) and one round trip per statement instead of a transaction each. Each
 * caller still hears back only after the commit, so an answer still means durable.
 *
 * With `unique`, calls with the same key go into separate batches, one after the other in the
 * database (the later one waits on the earlier one's row locks): a task completed twice in one
 * tick is then acknowledged once.
 */
export class TickBatcher<P, R> {
  private pending: { params: P; resolve(result: R): void; reject(err: unknown): void }[] = [];
  private scheduled = false;

  constructor(
    /** Writes one batch; returns, in the batch's order, each call's result or the error it gets. */
    private readonly write: (batch: P[]) => Promise<(R | Error)[]>,
    private readonly options: { unique?: (params: P) => unknown; maxBatch?: number } = {},
  ) {}

  run(params: P): Promise<R> {
    return new Promise((resolve, reject) => {
      this.pending.push({ params, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.scheduled = false;
    const maxBatch = this.options.maxBatch ?? 1_000;
    let left = this.pending;
    this.pending = [];
    while (left.length > 0) {
      const batch: typeof left = [];
      const rest: typeof left = [];
      const keys = new Set<unknown>();
      for (const call of left) {
        const key = this.options.unique?.(call.params);
        if (batch.length >= maxBatch || (key !== undefined && keys.has(key))) rest.push(call);
        else {
          if (key !== undefined) keys.add(key);
          batch.push(call);
        }
      }
      void this.runBatch(batch);
      left = rest;
    }
  }

  private async runBatch(batch: typeof this.pending): Promise<void> {
    try {
      const results = await this.write(batch.map((call) => call.params));
      batch.forEach((call, i) => {
        const result = results[i];
        if (result instanceof Error) call.reject(result);
        else call.resolve(result);
      });
    } catch (err) {
      for (const call of batch) call.reject(err);
    }
  }
}
