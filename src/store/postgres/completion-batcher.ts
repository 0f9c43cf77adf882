/** One completion waiting for its batch. */
export interface PendingCompletion {
  id: number;
  agentId: string;
  /** The result as JSON text. */
  result: string;
  now: number;
}

/**
 * Group commit for completions, as SQLite's GroupCommit does for every write: completions that
 * arrive in the same tick are written by one statement in one transaction, so that a burst of
 * them costs one commit (one WAL flush) instead of one each. Each caller still hears back only
 * after the commit, so a 200 still means durable.
 *
 * A task completed twice in one tick goes into two batches, one after the other in the database
 * (the second waits on the first's row lock), so that exactly one of them is acknowledged.
 */
export class CompletionBatcher<Row extends { id: number }> {
  private pending: (PendingCompletion & { resolve(row: Row | undefined): void; reject(err: unknown): void })[] = [];
  private scheduled = false;

  constructor(
    /** Writes one batch (ids unique) and returns the rows it completed. */
    private readonly write: (batch: PendingCompletion[]) => Promise<Row[]>,
    private readonly maxBatch = 1_000,
  ) {}

  /** Resolves with the completed row, or undefined when the agent did not hold the lease. */
  complete(completion: PendingCompletion): Promise<Row | undefined> {
    return new Promise((resolve, reject) => {
      this.pending.push({ ...completion, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.scheduled = false;
    let left = this.pending;
    this.pending = [];
    while (left.length > 0) {
      const batch: typeof left = [];
      const rest: typeof left = [];
      const ids = new Set<number>();
      for (const p of left) {
        if (ids.has(p.id) || batch.length >= this.maxBatch) rest.push(p);
        else {
          ids.add(p.id);
          batch.push(p);
        }
      }
      void this.run(batch);
      left = rest;
    }
  }

  private async run(batch: typeof this.pending): Promise<void> {
    try {
      const rows = new Map((await this.write(batch)).map((row) => [row.id, row]));
      for (const p of batch) p.resolve(rows.get(p.id));
    } catch (err) {
      for (const p of batch) p.reject(err);
    }
  }
}
