import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { compilePipeline, PipelineDefinitionError } from '../src/pipelines/validate.js';
import { startServer } from '../src/server/server.js';
import { tempDir } from './helpers.js';

const scope = { providers: new Set(['llm']), functions: new Set(['score']) };

function rejected(def: unknown): PipelineDefinitionError {
  try {
    compilePipeline(def as any, scope);
  } catch (err) {
    assert.ok(err instanceof PipelineDefinitionError, String(err));
    return err;
  }
  assert.fail('the definition was accepted');
}

test('bad definitions are rejected with a message naming the pipeline, the step and the field', () => {
  const cases: [unknown, string | null, string][] = [
    [{ name: 'p', steps: [] }, null, 'steps'],
    [{ name: 'p', steps: [{ name: 'a', kind: 'teleport' }] }, 'a', 'kind'],
    [{ name: 'p', steps: [{ name: 'a', kind: 'llm', provider: 'llm' }] }, 'a', 'prompt'],
    [{ name: 'p', steps: [{ name: 'a', kind: 'llm', provider: 'nope', prompt: 'x' }] }, 'a', 'provider'],
    [{ name: 'p', steps: [{ name: 'a', kind: 'code', fn: 'missing' }] }, 'a', 'fn'],
    [{ name: 'p', steps: [{ name: 'a', kind: 'code', fn: 'score', needs: ['ghost'] }] }, 'a', 'needs'],
    [{ name: 'p', steps: [{ name: 'a', kind: 'code', fn: 'score', needs: ['b'] }, { name: 'b', kind: 'code', fn: 'score', needs: ['a'] }] }, 'a', 'needs'],
    [{ name: 'p', steps: [{ name: 'a', kind: 'code', fn: 'score' }, { name: 'a', kind: 'code', fn: 'score' }] }, 'a', 'name'],
    [{ name: 'p', steps: [{ name: 'a', kind: 'http', url: 'ftp://x' }] }, 'a', 'url'],
    [{ name: 'p', steps: [{ name: 'a', kind: 'code', fn: 'score', timeoutMs: -1 }] }, 'a', 'timeoutMs'],
    [{ name: 'p', steps: [{ name: 'a', kind: 'code', fn: 'score', promt: 'typo' }] }, 'a', 'promt'],
    [
      { name: 'p', steps: [{ name: 'a', kind: 'llm', provider: 'llm', prompt: 'x', needs: [] }, { name: 'b', kind: 'llm', provider: 'llm', prompt: '{{steps.c}}', needs: [] }, { name: 'c', kind: 'code', fn: 'score', needs: [] }] },
      'b',
      'template',
    ],
    [{ name: 'p', defaults: { attempts: 0 }, steps: [{ name: 'a', kind: 'code', fn: 'score' }] }, null, 'defaults.attempts'],
  ];
  for (const [def, step, field] of cases) {
    const err = rejected(def);
    assert.equal(err.step, step, err.message);
    assert.equal(err.field, field, err.message);
    assert.match(err.message, new RegExp(`^pipeline p${step ? `, step ${step}` : ''}: ${field} `));
  }
});

test('a plain list is a chain, needs: [] starts at once, and steps no one needs are the sinks', () => {
  const p = compilePipeline(
    {
      name: 'fan',
      steps: [
        { name: 'a', kind: 'code', fn: 'score' },
        { name: 'b', kind: 'code', fn: 'score' },
        { name: 'c', kind: 'code', fn: 'score', needs: ['a'] },
        { name: 'd', kind: 'code', fn: 'score', needs: [] },
      ],
    },
    scope,
  );
  assert.deepEqual(p.steps.map((s) => s.needs), [[], ['a'], ['a'], []]);
  assert.deepEqual(p.sinks, ['b', 'c', 'd']);
});

test('a server given a bad pipelines file refuses to start and says which step and field', async () => {
  const dir = tempDir();
  const file = join(dir, 'pipelines.yaml');
  writeFileSync(
    file,
    `providers:
  - name: sim
    kind: simulated
pipelines:
  - name: complaint
    steps:
      - name: extract
        kind: llm
        provider: sim
        prompt: "Extract: {{input.text}}"
      - name: classify
        kind: llm
        provider: simulated-typo
        prompt: "{{steps.extract}}"
`,
  );
  await assert.rejects(
    startServer({ host: '127.0.0.1', port: 0, dataDir: dir, pipelinesFile: file }, { logger: false, env: {} }),
    /pipeline complaint, step classify: provider names no configured provider/,
  );
  writeFileSync(file, 'pipelines: [ {name: x');
  await assert.rejects(startServer({ host: '127.0.0.1', port: 0, dataDir: dir, pipelinesFile: file }, { logger: false, env: {} }), /is not valid YAML/);
  rmSync(dir, { recursive: true, force: true });
});
