/**
 * `npm run bench -- submit [--batch 20] [--connections 4] [--seconds 3] [--rounds 3]`
 *
 * Batch submits alone: `--connections` clients each send `POST /v1/tasks/batch` of `--batch`
 * small tasks, one after another, for `--seconds`, first asking for an uncompressed answer, then
 * for gzip (as Node's fetch and most HTTP clients do), `--rounds` times each, taking turns. Reports
 * tasks/s and the server's CPU a task submitted (read from /proc): what a submit costs the server
 * beside the store's insert, its answer's JSON and its compression.
 */
import { Pool } from 'undici';
import { authHeaders, flags, report, startServerProcess, type Row } from '../lib.js';

export default async function submitScenario(args: string[]): Promise<void> {
  const f = flags(args, { batch: 20, connections: 4, seconds: 3, rounds: 3 });
  const server = await startServerProcess();
  const pool = new Pool(server.url, { connections: f.connections });
  const rows: Row[] = [];
  try {
    const body = JSON.stringify({ tasks: Array.from({ length: f.batch }, (_, i) => ({ type: 'submit-bench', payload: { i } })) });
    const submit = async (encoding: string) => {
      const res = await pool.request({
        method: 'POST',
        path: '/v1/tasks/batch',
        headers: { ...authHeaders, 'content-type': 'application/json', 'accept-encoding': encoding },
        body,
      });
      await res.body.arrayBuffer();
      if (res.statusCode !== 201) throw new Error(`submit: ${res.statusCode}`);
      return String(res.headers['content-encoding'] ?? 'identity');
    };
    // Warm up: the server's code compiled, its pool's connections open.
    for (let i = 0; i < 200; i++) await submit('identity');
    for (let round = 1; round <= f.rounds; round++) {
      for (const encoding of ['identity', 'gzip, deflate']) {
        let requests = 0;
        let answered = '';
        const cpuBefore = server.cpuMs();
        const started = performance.now();
        const end = started + f.seconds * 1000;
        await Promise.all(
          Array.from({ length: f.connections }, async () => {
            while (performance.now() < end) {
              answered = await submit(encoding);
              requests++;
            }
          }),
        );
        const seconds = (performance.now() - started) / 1000;
        const tasks = requests * f.batch;
        rows.push({
          round,
          'accept-encoding': encoding,
          'answered as': answered,
          batch: f.batch,
          'tasks/s': Math.round(tasks / seconds),
          'server cpu µs/task': Math.round(((server.cpuMs() - cpuBefore) * 1000) / tasks),
        });
      }
    }
  } finally {
    await pool.close();
    await server.stop();
  }
  report('submit', rows, { flags: f });
}
