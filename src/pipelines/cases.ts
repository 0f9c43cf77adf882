import { Piscina } from 'piscina';
import { notFound } from '../domain/errors.js';
import type { NamespaceFilter } from '../domain/namespaces.js';
import type { Case, CaseMember } from '../domain/runs.js';
import type { Page } from '../domain/types.js';
import { Semaphore } from '../limits/semaphore.js';
import type { CaseStore } from '../store/case-store.js';
import type { StepContext } from './definition.js';
import { StepError } from './steps/step.js';
import { steadyNow } from '../core/clock.js';

// Loaded by file name, which no import rewriting reaches: .ts from source (tsx), .js when built.
const workerFile = new URL(import.meta.url.endsWith('.ts') ? './similarity-worker.ts' : './similarity-worker.js', import.meta.url).href;

/**
 * Groups pipeline runs into cases by the cosine similarity of their embeddings: a run joins the
 * case whose centroid is most similar, if at least `threshold`, or opens a new case. The centroids
 * live in memory in a SharedArrayBuffer, searched on a worker thread, and in the store, which is
 * the truth they are rebuilt from at start and caught up with before each assignment. Assignments
 * are serialised, across nodes too, so that two alike runs arriving together cannot open two cases.
 *
 * A case belongs to the namespace of the run that opened it, and a run joins only a case of its own
 * namespace: each namespace has its centroids apart, so that one team's runs are never compared
 * with, nor grouped under, another's.
 */
export class CaseService {
  /** The centroids of each namespace's cases. */
  private readonly indexes = new Map<string, CaseIndex>();
  /** The store's case version the indexes have caught up to. */
  private version = 0;
  private readonly one = new Semaphore(1);
  private pool?: Piscina;

  constructor(
    private readonly store: CaseStore,
    private readonly options: { threshold: number; now?: () => number },
  ) {}

  async start(): Promise<void> {
    await this.catchUp();
  }

  /** Loads the cases created or changed since the last look, by this node or any other sharing the store. */
  private async catchUp(): Promise<void> {
    for (const { id, namespace, centroid, version } of await this.store.caseCentroids({ afterVersion: this.version })) {
      this.indexOf(namespace).put(id, centroid);
      this.version = Math.max(this.version, version);
    }
  }

  async close(): Promise<void> {
    await this.pool?.destroy();
  }

  /**
   * Puts the run in a case of its namespace (once: a run already placed keeps its case) and says
   * which. Assignments take turns across every node sharing the store, each after catching up on
   * the others' cases.
   */
  assign(params: { namespace: string; runId: number; vector: number[]; text: string }): Promise<{ caseId: number; similarity: number; created: boolean }> {
    return this.one.run(() => this.store.caseExclusive(async () => {
      await this.catchUp();
      const existing = await this.store.caseOfRun({ runId: params.runId });
      if (existing) return { ...existing, created: false };
      const { vector, namespace } = params;
      const index = this.indexOf(namespace);
      if (index.dims !== 0 && vector.length !== index.dims) {
        throw new StepError(`the vector has ${vector.length} dimensions; the cases have ${index.dims}`, false);
      }
      const now = (this.options.now ?? steadyNow)();
      const best = index.ids.length === 0 ? { row: -1, similarity: 0 } : await this.nearest(index, vector);
      if (best.row >= 0 && best.similarity >= this.options.threshold) {
        const caseId = index.ids[best.row];
        const current = await this.store.caseGet({ id: caseId });
        const centroid = index.row(best.row).map((c, j) => (c * current!.size + vector[j]) / (current!.size + 1));
        await this.store.caseAddMember({ caseId, runId: params.runId, text: params.text, similarity: best.similarity, centroid, now });
        index.put(caseId, centroid);
        return { caseId, similarity: best.similarity, created: false };
      }
      const created = await this.store.caseCreate({ namespace, runId: params.runId, title: params.text.slice(0, 120), text: params.text, vector, now });
      index.put(created.id, vector);
      return { caseId: created.id, similarity: 1, created: true };
    }));
  }

  list(params: { namespaces?: NamespaceFilter; limit: number; cursor?: string }): Promise<Page<Case>> {
    return this.store.caseList(params);
  }

  /** By id, whatever its namespace: routes check the asker may see it. */
  async get(id: number): Promise<Case & { members: CaseMember[] }> {
    const found = await this.store.caseGet({ id });
    if (!found) throw notFound('case', id);
    return { ...found, members: await this.store.caseMembers({ caseId: id, limit: 1_000 }) };
  }

  /**
   * The built-in `group-into-case` code step: takes the vector from the output of the step it
   * needs (the embed step), the text from the run's input `text`, and returns the case it joined.
   */
  readonly groupStep = async (ctx: StepContext): Promise<unknown> => {
    const vector = ctx.step.needs.map((n) => ctx.steps[n]).find((o) => Array.isArray(o) && o.every((x) => typeof x === 'number')) as number[] | undefined;
    if (!vector) throw new StepError('group-into-case needs a step whose output is a vector (an embed step)', false);
    const input = ctx.input as { text?: unknown } | null;
    const text = typeof input?.text === 'string' ? input.text : JSON.stringify(ctx.input);
    return this.assign({ namespace: ctx.run.namespace, runId: ctx.run.id, vector, text });
  };

  private indexOf(namespace: string): CaseIndex {
    let index = this.indexes.get(namespace);
    if (!index) this.indexes.set(namespace, (index = new CaseIndex()));
    return index;
  }

  private nearest(index: CaseIndex, vector: number[]): Promise<{ row: number; similarity: number }> {
    this.pool ??= new Piscina({ filename: workerFile, minThreads: 0, maxThreads: 1, idleTimeout: 60_000 });
    return this.pool.run({ buffer: index.buffer, rows: index.ids.length, dims: index.dims, vector });
  }
}

/** One namespace's case centroids, a row each in a SharedArrayBuffer the worker searches. */
class CaseIndex {
  buffer = new SharedArrayBuffer(0);
  dims = 0;
  readonly ids: number[] = [];
  private readonly rowOf = new Map<number, number>();

  row(i: number): number[] {
    return Array.from(new Float32Array(this.buffer, i * this.dims * 4, this.dims));
  }

  put(id: number, centroid: number[]): void {
    if (this.dims === 0) this.dims = centroid.length;
    let i = this.rowOf.get(id);
    if (i === undefined) {
      i = this.ids.length;
      const needed = (i + 1) * this.dims * 4;
      if (needed > this.buffer.byteLength) {
        const grown = new SharedArrayBuffer(Math.max(needed, this.buffer.byteLength * 2, 64 * this.dims * 4));
        new Float32Array(grown).set(new Float32Array(this.buffer));
        this.buffer = grown;
      }
      this.ids.push(id);
      this.rowOf.set(id, i);
    }
    new Float32Array(this.buffer, i * this.dims * 4, this.dims).set(centroid);
  }
}
