import { APPROVAL_TIMEOUT_MS, STEP_KINDS, defaultStepPolicy, type CompiledStep, type Pipeline, type PipelineDefinition, type StepDefinition, type StepPolicy } from './definition.js';
import { placeholders } from './template.js';

/** A pipeline definition that cannot run, naming the pipeline, the step and the field at fault. */
export class PipelineDefinitionError extends Error {
  constructor(
    readonly pipeline: string,
    readonly step: string | null,
    readonly field: string,
    reason: string,
  ) {
    super(`pipeline ${pipeline}${step === null ? '' : `, step ${step}`}: ${field} ${reason}`);
    this.name = 'PipelineDefinitionError';
  }
}

/** What a definition may refer to besides its own steps. */
export interface DefinitionScope {
  providers: ReadonlySet<string>;
  functions: ReadonlySet<string>;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
const REQUIRED_TEXT: Record<StepDefinition['kind'], string[]> = {
  llm: ['provider', 'prompt'],
  embed: ['provider', 'input'],
  http: ['url'],
  agent: ['capability'],
  code: [],
  nlp: ['text'],
  approval: ['prompt'],
};
const ALLOWED: Record<StepDefinition['kind'], string[]> = {
  llm: ['provider', 'model', 'system', 'prompt', 'json', 'temperature', 'maxTokens'],
  embed: ['provider', 'model', 'input'],
  http: ['url', 'method', 'headers', 'body'],
  agent: ['capability', 'type', 'payload', 'priority', 'leaseMs', 'taskAttempts'],
  code: ['fn'],
  nlp: ['operation', 'text'],
  approval: ['prompt', 'onTimeout', 'approvers'],
};
const COMMON = ['name', 'kind', 'needs', 'timeoutMs', 'attempts', 'backoffMs', 'backoffMaxMs'];

/**
 * Checks a definition completely before anything runs — names, kinds, each kind's fields, the
 * providers and functions it names, needs that exist and form no cycle, templates that refer only
 * to the input and to steps it needs — and returns it compiled.
 */
export function compilePipeline(def: PipelineDefinition, scope: DefinitionScope): Pipeline {
  const raw = def as unknown as Record<string, unknown>;
  const pipelineName = typeof raw?.name === 'string' ? raw.name : '(unnamed)';
  const fail = (step: string | null, field: string, reason: string): never => {
    throw new PipelineDefinitionError(pipelineName, step, field, reason);
  };
  if (raw === null || typeof raw !== 'object') fail(null, 'definition', 'must be an object');
  if (typeof raw.name !== 'string' || !NAME.test(raw.name)) fail(null, 'name', 'must be a name of letters, digits, _ . -');
  for (const key of Object.keys(raw)) if (!['name', 'description', 'defaults', 'steps'].includes(key)) fail(null, key, 'is not a known field');
  if (raw.description !== undefined && typeof raw.description !== 'string') fail(null, 'description', 'must be text');
  const defaults = { ...defaultStepPolicy, ...checkPolicy(raw.defaults ?? {}, (f, r) => fail(null, `defaults.${f}`, r)) };
  if (!Array.isArray(raw.steps) || raw.steps.length === 0) fail(null, 'steps', 'must be a non-empty list');

  const steps: CompiledStep[] = [];
  const seen = new Set<string>();
  (raw.steps as unknown[]).forEach((s, index) => {
    const step = s as Record<string, unknown>;
    if (step === null || typeof step !== 'object') fail(`#${index + 1}`, 'step', 'must be an object');
    const name = typeof step.name === 'string' && NAME.test(step.name) ? step.name : fail(`#${index + 1}`, 'name', 'must be a name of letters, digits, _ . -');
    if (seen.has(name)) fail(name, 'name', 'is used by another step');
    seen.add(name);
    const kind = step.kind as StepDefinition['kind'];
    if (!STEP_KINDS.includes(kind)) fail(name, 'kind', `must be one of ${STEP_KINDS.join(', ')}`);
    for (const key of Object.keys(step)) if (!COMMON.includes(key) && !ALLOWED[kind].includes(key)) fail(name, key, `is not a field of a ${kind} step`);
    for (const field of REQUIRED_TEXT[kind]) {
      if (typeof step[field] !== 'string' || step[field] === '') fail(name, field, `is required for a ${kind} step (text)`);
    }
    if ((kind === 'llm' || kind === 'embed') && !scope.providers.has(step.provider as string)) {
      fail(name, 'provider', `names no configured provider (known: ${[...scope.providers].join(', ') || 'none'})`);
    }
    if (kind === 'code') {
      if (typeof step.fn === 'string') {
        if (!scope.functions.has(step.fn)) fail(name, 'fn', `names no registered function (known: ${[...scope.functions].join(', ') || 'none'})`);
      } else if (typeof step.fn !== 'function') fail(name, 'fn', 'must name a registered function or be one');
    }
    if (kind === 'nlp' && step.operation !== 'intake' && step.operation !== 'entities') fail(name, 'operation', 'must be intake or entities');
    if (kind === 'http') {
      if (step.method !== undefined && !['GET', 'POST', 'PUT', 'PATCH', 'DELETE'].includes(step.method as string)) fail(name, 'method', 'must be GET, POST, PUT, PATCH or DELETE');
      if (!/^https?:\/\/|^\{\{/.test(step.url as string)) fail(name, 'url', 'must start with http:// or https:// (or be a template)');
    }
    if (kind === 'llm') {
      if (step.system !== undefined && typeof step.system !== 'string') fail(name, 'system', 'must be text');
      if (step.json !== undefined && typeof step.json !== 'boolean') fail(name, 'json', 'must be true or false');
      if (step.temperature !== undefined && !(typeof step.temperature === 'number' && step.temperature >= 0 && step.temperature <= 2)) fail(name, 'temperature', 'must be a number from 0 to 2');
      if (step.maxTokens !== undefined && !(Number.isSafeInteger(step.maxTokens) && (step.maxTokens as number) > 0)) fail(name, 'maxTokens', 'must be a positive whole number');
    }
    if (kind === 'agent') {
      for (const f of ['priority', 'leaseMs', 'taskAttempts']) {
        if (step[f] !== undefined && !Number.isSafeInteger(step[f])) fail(name, f, 'must be a whole number');
      }
    }
    if (kind === 'approval') {
      // One decision, not attempts: what would retry a person?
      for (const f of ['attempts', 'backoffMs', 'backoffMaxMs']) if (step[f] !== undefined) fail(name, f, 'is not a field of an approval step');
      if (step.onTimeout !== undefined && step.onTimeout !== 'approve' && step.onTimeout !== 'reject') fail(name, 'onTimeout', 'must be approve or reject');
      if (step.approvers !== undefined) checkApprovers(step.approvers, (f, r) => fail(name, f, r));
    }
    let needs: string[];
    if (step.needs === undefined) needs = index === 0 ? [] : [steps[index - 1].name];
    else if (Array.isArray(step.needs) && step.needs.every((n) => typeof n === 'string')) needs = step.needs as string[];
    else needs = fail(name, 'needs', 'must be a list of step names');
    const policy = { ...defaults, ...checkPolicy(step, (f, r) => fail(name, f, r)) };
    // The pipeline's defaults are for work; a person is given a day unless the step says otherwise.
    if (kind === 'approval' && step.timeoutMs === undefined) policy.timeoutMs = APPROVAL_TIMEOUT_MS;
    steps.push({ ...(step as unknown as StepDefinition), needs, policy } as CompiledStep);
  });

  const byName = new Map(steps.map((s) => [s.name, s]));
  for (const s of steps) {
    for (const n of s.needs) {
      if (!byName.has(n)) fail(s.name, 'needs', `names ${n}, which is not a step of this pipeline`);
      if (n === s.name) fail(s.name, 'needs', 'names the step itself');
    }
  }
  const ancestors = ancestorsOf(steps, (step) => fail(step, 'needs', 'forms a cycle'));
  for (const s of steps) {
    for (const path of placeholders(s)) {
      const [root, stepName] = path.split('.');
      if (root === 'input' || root === 'run') continue;
      if (root !== 'steps' || stepName === undefined) fail(s.name, 'template', `{{${path}}} must start with input., steps. or run.`);
      if (!ancestors.get(s.name)!.has(stepName)) fail(s.name, 'template', `{{${path}}} refers to ${stepName}, which is not among the steps it needs`);
    }
  }
  const needed = new Set(steps.flatMap((s) => s.needs));
  return {
    name: raw.name as string,
    description: (raw.description as string | undefined) ?? '',
    steps,
    sinks: steps.filter((s) => !needed.has(s.name)).map((s) => s.name),
  };
}

function checkApprovers(value: unknown, fail: (field: string, reason: string) => never): void {
  const a = value as Record<string, unknown>;
  if (a === null || typeof a !== 'object' || Array.isArray(a)) fail('approvers', 'must be an object with keys and/or agents');
  for (const key of Object.keys(a)) if (key !== 'keys' && key !== 'agents') fail(`approvers.${key}`, 'is not a known field (keys, agents)');
  for (const key of ['keys', 'agents']) {
    const names = a[key];
    if (names === undefined) continue;
    if (!Array.isArray(names) || names.length > 100 || !names.every((n) => typeof n === 'string' && n !== '' && n.length <= 200)) {
      fail(`approvers.${key}`, 'must be a list of at most 100 names');
    }
  }
  if (((a.keys as unknown[] | undefined)?.length ?? 0) + ((a.agents as unknown[] | undefined)?.length ?? 0) === 0) fail('approvers', 'must name at least one key or agent');
}

function checkPolicy(p: unknown, fail: (field: string, reason: string) => never): StepPolicy {
  const policy = p as Record<string, unknown>;
  const out: StepPolicy = {};
  const limits: Record<keyof StepPolicy, number> = { timeoutMs: 1, attempts: 1, backoffMs: 0, backoffMaxMs: 0 };
  for (const key of Object.keys(limits) as (keyof StepPolicy)[]) {
    const v = policy[key];
    if (v === undefined) continue;
    if (!Number.isSafeInteger(v) || (v as number) < limits[key]) fail(key, `must be a whole number of at least ${limits[key]}`);
    out[key] = v as number;
  }
  return out;
}

/** Every step's transitive needs; calls onCycle with a step on a cycle. */
function ancestorsOf(steps: CompiledStep[], onCycle: (step: string) => never): Map<string, Set<string>> {
  const byName = new Map(steps.map((s) => [s.name, s]));
  const result = new Map<string, Set<string>>();
  const visiting = new Set<string>();
  const visit = (name: string): Set<string> => {
    const done = result.get(name);
    if (done) return done;
    if (visiting.has(name)) onCycle(name);
    visiting.add(name);
    const all = new Set<string>();
    for (const n of byName.get(name)!.needs) {
      all.add(n);
      for (const a of visit(n)) all.add(a);
    }
    visiting.delete(name);
    result.set(name, all);
    return all;
  };
  for (const s of steps) visit(s.name);
  return result;
}
