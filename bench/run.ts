/**
 * `npm run bench -- <scenario> [flags]`: runs bench/scenarios/<scenario>.ts. Each scenario starts
 * its own server process, drives it from separate processes, prints a table and writes JSON to
 * bench/results/.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const scenarios = readdirSync(join(here, 'scenarios'))
  .filter((f) => f.endsWith('.ts'))
  .map((f) => f.slice(0, -3))
  .sort();

const [name, ...args] = process.argv.slice(2);
if (!name || !scenarios.includes(name)) {
  process.stderr.write(`usage: npm run bench -- <scenario> [flags]\nscenarios: ${scenarios.join(', ')}\n`);
  process.exit(name ? 2 : 0);
}
// Servers run compiled, as in production: build what is there now.
execFileSync(process.execPath, [join(here, '../node_modules/typescript/bin/tsc'), '-p', join(here, '../tsconfig.build.json')], { stdio: 'inherit' });
const scenario = (await import(`./scenarios/${name}.ts`)) as { default: (args: string[]) => Promise<void> };
await scenario.default(args);
