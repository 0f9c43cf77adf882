import { readFileSync } from 'node:fs';
import { extname } from 'node:path';
import { parse as parseYaml } from 'yaml';
import type { ProviderConfig } from '../providers/registry.js';
import type { PipelineDefinition } from './definition.js';

/** A pipelines file: the providers its steps call and the pipelines themselves. */
export interface PipelinesFile {
  providers: ProviderConfig[];
  pipelines: PipelineDefinition[];
}

export class PipelinesFileError extends Error {
  constructor(file: string, reason: string) {
    super(`pipelines file ${file}: ${reason}`);
    this.name = 'PipelinesFileError';
  }
}

/** Reads a JSON or YAML pipelines file (by extension). Its pipelines are validated when the engine compiles them. */
export function loadPipelinesFile(file: string): PipelinesFile {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new PipelinesFileError(file, (err as Error).message);
  }
  let doc: unknown;
  try {
    doc = extname(file) === '.json' ? JSON.parse(text) : parseYaml(text);
  } catch (err) {
    throw new PipelinesFileError(file, `is not valid ${extname(file) === '.json' ? 'JSON' : 'YAML'}: ${(err as Error).message}`);
  }
  const d = doc as Record<string, unknown> | null;
  if (d === null || typeof d !== 'object' || Array.isArray(d)) throw new PipelinesFileError(file, 'must hold an object with providers and pipelines');
  for (const key of Object.keys(d)) if (key !== 'providers' && key !== 'pipelines') throw new PipelinesFileError(file, `${key} is not a known field`);
  if (d.providers !== undefined && !Array.isArray(d.providers)) throw new PipelinesFileError(file, 'providers must be a list');
  if (d.pipelines !== undefined && !Array.isArray(d.pipelines)) throw new PipelinesFileError(file, 'pipelines must be a list');
  return { providers: (d.providers ?? []) as ProviderConfig[], pipelines: (d.pipelines ?? []) as PipelineDefinition[] };
}
