/**
 * Sums V8 CPU profiles (.cpuprofile, as `FLEETD_BENCH_CPU_PROF=dir npm run bench -- …` leaves them)
 * by function: `node --import tsx bench/profile.ts dir-or-file… [--top 40] [--inclusive]`. Self time
 * by default; with --inclusive, the time of each function and everything it called (a function
 * counted once per sample however often it is on the stack), which shows where a request's time goes.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: Node[];
  samples: number[];
  timeDeltas: number[];
}

const args = process.argv.slice(2);
const topAt = args.indexOf('--top');
const top = topAt >= 0 ? Number(args.splice(topAt, 2)[1]) : 40;
const inclusiveAt = args.indexOf('--inclusive');
const inclusive = inclusiveAt >= 0 && args.splice(inclusiveAt, 1).length > 0;
const files = args.flatMap((a) => (statSync(a).isDirectory() ? readdirSync(a).filter((f) => f.endsWith('.cpuprofile')).map((f) => join(a, f)) : [a]));
for (const file of files) {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parentOf = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parentOf.set(c, n.id);
  const nameOf = (n: Node) => {
    const f = n.callFrame;
    return `${f.functionName || '(anonymous)'} ${f.url.replace(/^.*\/(node_modules|dist|src)\//, '$1/')}:${f.lineNumber + 1}`;
  };
  const self = new Map<string, number>();
  let total = 0;
  profile.samples.forEach((id, i) => {
    const dt = profile.timeDeltas[i] ?? 0;
    total += dt;
    const names = new Set<string>();
    for (let n: Node | undefined = byId.get(id); n; n = inclusive ? byId.get(parentOf.get(n.id) ?? -1) : undefined) names.add(nameOf(n));
    for (const name of names) self.set(name, (self.get(name) ?? 0) + dt);
  });
  console.log(`${file}: ${(total / 1000).toFixed(0)} ms sampled`);
  for (const [name, us] of [...self].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    console.log(`${((100 * us) / total).toFixed(1).padStart(5)} %  ${(us / 1000).toFixed(0).padStart(6)} ms  ${name}`);
  }
}
