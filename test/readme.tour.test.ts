import assert from 'node:assert/strict';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { kill9, startFleetdProcess, tempDir } from './helpers.js';
import { runCommand } from './cli-run.js';

/** The shell block of the README's "Try it" section, exactly as a newcomer pastes it. */
function readmeTour(): string {
  const readme = readFileSync(join(import.meta.dirname, '..', 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## Try it'));
  const block = /```sh\n([\s\S]*?)```/.exec(section);
  assert.ok(block, 'no sh block in the README\'s "Try it" section');
  return block[1];
}

describe("the README's five-line tour", () => {
  it('pastes and runs in order against a real server whose store already has tasks', async () => {
    const dataDir = tempDir();
    const { child, api, port, adminKey } = await startFleetdProcess(dataDir);
    try {
      // Tasks from before the tour: older crawl work the tour's agent may be given first, and others.
      for (let i = 0; i < 3; i++) await api.submit({ type: 'crawl', payload: { earlier: i }, priority: 5 });
      for (let i = 0; i < 2; i++) await api.submit({ type: 'index', payload: { earlier: i } });

      const script = readmeTour().replaceAll('localhost:7070', `127.0.0.1:${port}`);
      const run = await runCommand('sh', ['-c', script], { env: { PATH: process.env.PATH, KEY: adminKey } });
      assert.equal(run.code, 0, run.stderr);
      assert.equal(run.stderr, '');
      const answers = run.stdout.trim().split('\n').map((line) => JSON.parse(line));
      assert.equal(answers.length, 5, run.stdout);
      for (const answer of answers) assert.equal(answer.error?.code, undefined, JSON.stringify(answer));
      const [registered, submitted, claimed, completed, stats] = answers;
      assert.equal(registered.agent.name, 'crawler-1');
      assert.equal(submitted.task.type, 'crawl');
      assert.equal(claimed.tasks.length, 1);
      assert.equal(completed.id, claimed.tasks[0].id);
      assert.equal(completed.status, 'completed');
      assert.equal(completed.agentId, registered.agent.id);
      assert.deepEqual((await api.get(`/v1/tasks/${completed.id}`)).body.result, { pages: 12 });
      assert.equal(stats.tasks.byStatus.completed, 1, JSON.stringify(stats));
    } finally {
      await kill9(child);
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
