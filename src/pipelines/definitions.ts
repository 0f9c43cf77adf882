import { checkJsonValue } from '../core/payload.js';
import { FleetError, notFound } from '../domain/errors.js';
import type { NamespaceFilter } from '../domain/namespaces.js';
import type { PipelineRun, PipelineVersion } from '../domain/runs.js';
import type { PipelineStore } from '../store/pipeline-store.js';
import type { Pipeline, PipelineDefinition } from './definition.js';
import { PipelineDefinitionError } from './validate.js';

/** Compiled versions kept in memory; a version never changes, so an entry is only ever dropped for room. */
const CACHED_VERSIONS = 1_000;
/** Most steps of a pipeline defined over the API. */
export const MAX_API_STEPS = 100;

/** Where a pipeline comes from: the pipelines file (or code) of this node, or the API (a version in the store). */
export type PipelineSource = 'file' | 'api';

export interface CurrentPipeline {
  pipeline: Pipeline;
  source: PipelineSource;
  /** The namespace an API pipeline was defined in; null for one of the file, which every namespace has. */
  namespace: string | null;
  /** The API version; null for a pipeline of the file. */
  version: number | null;
  /** When the version was stored; null for a pipeline of the file. */
  createdAt: number | null;
}

/**
 * Every pipeline a run can start with: those of the pipelines file (and code), fixed at start, and
 * those defined over the API, stored as numbered versions in the store. A name belongs to one or
 * the other: the file's names cannot be changed over the API, and a name the file defines hides
 * any API versions of it (their unfinished runs still finish on their own version).
 *
 * The file's pipelines are the operator's, and every namespace has them; a pipeline defined over
 * the API belongs to the namespace it was defined in, and each namespace has its own versions of
 * a name (two teams may both define `triage`, differently).
 *
 * Each node reads the newest version from the store when a run starts, so a version stored on one
 * node is the one every node starts runs with from then on, with no message between them to lose.
 */
export class PipelineDefinitions {
  private readonly compiled = new Map<string, Pipeline>();

  constructor(
    private readonly options: {
      store: PipelineStore;
      /** The file's (and code's) pipelines, by name. */
      fixed: ReadonlyMap<string, Pipeline>;
      /** Validates a definition as the file's are validated; throws PipelineDefinitionError. */
      compile: (def: PipelineDefinition) => Pipeline;
      now: () => number;
      /** How large and deep a definition may be, as any JSON the API takes. */
      limits: { maxBytes: number; maxDepth: number };
    },
  ) {}

  get fixed(): ReadonlyMap<string, Pipeline> {
    return this.options.fixed;
  }

  /** The pipeline new runs of `name` in `namespace` start with: the file's, or the namespace's newest API version; 404 if none or deleted. */
  async current(namespace: string, name: string): Promise<CurrentPipeline> {
    const fixed = this.options.fixed.get(name);
    if (fixed) return { pipeline: fixed, source: 'file', namespace: null, version: null, createdAt: null };
    const [newest] = await this.options.store.versionList({ namespace, name, limit: 1 });
    if (!newest) throw notFound('pipeline', name);
    if (newest.definition === null) {
      throw new FleetError('FLEETD_ERR_NOT_FOUND', `pipeline ${name} was deleted (version ${newest.version}); PUT it again to define it anew`, {
        pipeline: name,
        deletedIn: newest.version,
      });
    }
    let pipeline: Pipeline;
    try {
      pipeline = this.compiledOf(newest);
    } catch (err) {
      // Nodes with other providers or functions than the node that stored the version.
      throw new FleetError('FLEETD_ERR_PIPELINE_UNRUNNABLE', `this node cannot run version ${newest.version}: ${(err as Error).message}`, {
        pipeline: name,
        version: newest.version,
      });
    }
    return { pipeline, source: 'api', namespace, version: newest.version, createdAt: newest.createdAt };
  }

  /** Every pipeline new runs can start with in these namespaces (all without the filter), by name. */
  async list(namespaces: NamespaceFilter): Promise<CurrentPipeline[]> {
    const fromApi = (await this.options.store.versionCurrent({ namespaces }))
      .filter((v) => !this.options.fixed.has(v.name))
      .flatMap((v): CurrentPipeline[] => {
        try {
          return [{ pipeline: this.compiledOf(v), source: 'api', namespace: v.namespace, version: v.version, createdAt: v.createdAt }];
        } catch {
          // A version this node cannot compile (a provider it lacks) is not offered here; its runs are left alone.
          return [];
        }
      });
    const fromFile = [...this.options.fixed.values()].map((pipeline): CurrentPipeline => ({ pipeline, source: 'file', namespace: null, version: null, createdAt: null }));
    // Stable: a name defined in several namespaces keeps the store's order of them.
    return [...fromFile, ...fromApi].sort((a, b) => a.pipeline.name.localeCompare(b.pipeline.name));
  }

  /**
   * The pipeline a run was started with: the file's for a run without a version, else its own
   * version (of its namespace), whatever the newest is. Undefined when this node cannot drive it.
   */
  async ofRun(run: PipelineRun): Promise<Pipeline | undefined> {
    if (run.pipelineVersion === null) return this.options.fixed.get(run.pipeline);
    const cached = this.compiled.get(versionKey(run.namespace, run.pipeline, run.pipelineVersion));
    if (cached) return cached;
    const version = await this.options.store.versionGet({ namespace: run.namespace, name: run.pipeline, version: run.pipelineVersion });
    if (!version || version.definition === null) return undefined;
    try {
      return this.compiledOf(version);
    } catch {
      return undefined;
    }
  }

  /** Validates the definition and stores it as the name's next version in the namespace. */
  async define(namespace: string, name: string, body: Record<string, unknown>): Promise<PipelineVersion> {
    this.refuseFixed(name);
    if (body.name !== undefined && body.name !== name) {
      throw new FleetError('FLEETD_ERR_PIPELINE_DEFINITION', `pipeline ${name}: name ${JSON.stringify(body.name)} differs from the name in the path`, {
        pipeline: name,
        step: null,
        field: 'name',
      });
    }
    const definition: Record<string, unknown> = { ...body, name };
    checkJsonValue(definition, 'definition', this.options.limits);
    try {
      // GET /v1/pipelines/runs and /stats are routes of their own: a pipeline so named could not be read.
      if (name === 'runs' || name === 'stats') throw new PipelineDefinitionError(name, null, 'name', 'runs and stats are taken by routes of the API');
      if (Array.isArray(definition.steps) && definition.steps.length > MAX_API_STEPS) {
        throw new PipelineDefinitionError(name, null, 'steps', `must hold at most ${MAX_API_STEPS} steps`);
      }
      this.options.compile(definition as unknown as PipelineDefinition);
    } catch (err) {
      if (!(err instanceof PipelineDefinitionError)) throw err;
      throw new FleetError('FLEETD_ERR_PIPELINE_DEFINITION', err.message, { pipeline: err.pipeline, step: err.step, field: err.field });
    }
    return (await this.options.store.versionAppend({ namespace, name, definition, now: this.options.now() }))!;
  }

  /** Records the deletion as the name's next version in the namespace: no new run starts there; runs under way finish. */
  async remove(namespace: string, name: string): Promise<PipelineVersion> {
    this.refuseFixed(name);
    const deleted = await this.options.store.versionAppend({ namespace, name, definition: null, now: this.options.now(), onlyIfLive: true });
    if (!deleted) throw notFound('pipeline', name);
    return deleted;
  }

  versions(namespace: string, name: string, limit: number): Promise<PipelineVersion[]> {
    return this.options.store.versionList({ namespace, name, limit });
  }

  async version(namespace: string, name: string, version: number): Promise<PipelineVersion> {
    const found = await this.options.store.versionGet({ namespace, name, version });
    if (!found) throw new FleetError('FLEETD_ERR_NOT_FOUND', `pipeline ${name} has no version ${version}`, { pipeline: name, version });
    return found;
  }

  private refuseFixed(name: string): void {
    if (this.options.fixed.has(name)) {
      throw new FleetError(
        'FLEETD_ERR_PIPELINE_FROM_FILE',
        `pipeline ${name} is defined by this node's pipelines file (or its code): change it there, or define the API's under another name`,
        { pipeline: name },
      );
    }
  }

  private compiledOf(v: PipelineVersion): Pipeline {
    const key = versionKey(v.namespace, v.name, v.version);
    let pipeline = this.compiled.get(key);
    if (!pipeline) {
      pipeline = this.options.compile(v.definition as PipelineDefinition);
      if (this.compiled.size >= CACHED_VERSIONS) this.compiled.delete(this.compiled.keys().next().value!);
      this.compiled.set(key, pipeline);
    }
    return pipeline;
  }
}

/** A compiled version's place in the cache: a name's versions are numbered per namespace. */
const versionKey = (namespace: string, name: string, version: number): string => `${namespace}/${version}:${name}`;
