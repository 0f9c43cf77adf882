/**
 * `npm run bench -- extend [--tasks 50] [--payload-bytes 262144] [--rounds 100] [--postgres 0]`
 *
 * What keeping leases costs when tasks carry long payloads (an LLM agent's prompts): one agent
 * holds `--tasks` tasks, each with `--payload-bytes` of random text, and extends them all
 * `--rounds` times, a batch of extensions a request (`POST /v1/tasks/complete`, as an SDK sends
 * what comes due in one tick). Prints the rate and the server's CPU an extension (with
 * `--postgres 1`, on a fresh PostgreSQL schema, also its backends'), then what one extension sent
 * alone over HTTP answers, as the SDKs send it (`?return=minimal`) and without.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { BENCH_ADMIN_KEY, BENCH_DATABASE_URL, dropSchemas, flags, postgresCpuFrom, report, startServerProcess } from '../lib.js';

export default async function extend(args: string[]): Promise<void> {
  const f = flags(args, { tasks: 50, 'payload-bytes': 262_144, rounds: 100, postgres: 0 });
  const schema = `fleetd_bench_extend_${randomBytes(4).toString('hex')}`;
  const onPostgres = f.postgres === 1;
  const server = await startServerProcess({
    ...(onPostgres ? { FLEETD_DATABASE_URL: BENCH_DATABASE_URL, FLEETD_DATABASE_SCHEMA: schema } : {}),
    FLEETD_RATE_LIMIT_WRITE: '0',
    FLEETD_RATE_LIMIT_READ: '0',
    FLEETD_RATE_LIMIT_CLAIM: '0',
  });
  // Plain requests, without compression: what an answer weighs is what it carries.
  const call = async (path: string, body: unknown): Promise<{ json: any; bytes: number }> => {
    const res = await fetch(server.url + path, {
      method: 'POST',
      headers: { authorization: `Bearer ${BENCH_ADMIN_KEY}`, 'content-type': 'application/json', 'accept-encoding': 'identity' },
      body: JSON.stringify(body),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${path}: ${res.status} ${text}`);
    return { json: JSON.parse(text), bytes: Buffer.byteLength(text) };
  };
  try {
    const type = `extend-${randomUUID().slice(0, 8)}`;
    const { agent } = (await call('/v1/agents', { name: 'extender', capabilities: [type], maxConcurrency: f.tasks })).json;
    const prompt = () => randomBytes(Math.ceil((f['payload-bytes'] * 3) / 4)).toString('base64').slice(0, f['payload-bytes']);
    await call('/v1/tasks/batch?return=minimal', { tasks: Array.from({ length: f.tasks }, () => ({ type, payload: { prompt: prompt() }, leaseMs: 600_000 })) });
    const ids: number[] = (await call('/v1/tasks/claim', { agentId: agent.id, max: f.tasks })).json.tasks.map((t: { id: number }) => t.id);
    if (ids.length !== f.tasks) throw new Error(`claimed ${ids.length} of ${f.tasks}`);
    const round = async () => {
      const { items } = (await call('/v1/tasks/complete', { agentId: agent.id, items: ids.map((id) => ({ op: 'extend', id })) })).json;
      const refused = items.find((i: { error?: unknown }) => i.error);
      if (refused) throw new Error(`an extension was refused: ${JSON.stringify(refused)}`);
    };
    for (let r = 0; r < 5; r++) await round();
    process.stdout.write(`\n— ${f.tasks} leased tasks of ${f['payload-bytes']} bytes, extended ${f.rounds} times on ${onPostgres ? 'PostgreSQL' : 'SQLite'} —\n`);
    const backends = onPostgres ? await postgresCpuFrom(server.pid, BENCH_DATABASE_URL) : undefined;
    const cpuStart = server.cpuMs();
    const started = performance.now();
    for (let r = 0; r < f.rounds; r++) await round();
    const ms = performance.now() - started;
    const n = f.rounds * f.tasks;
    const serverUs = Math.round(((server.cpuMs() - cpuStart) * 1000) / n);
    const postgresUs = backends ? Math.round(((await backends()) * 1000) / n) : undefined;
    const alone = async (query: string) => (await call(`/v1/tasks/${ids[0]}/extend${query}`, { agentId: agent.id })).bytes;
    report(
      'extend',
      [
        {
          store: onPostgres ? 'postgres' : 'sqlite',
          'payload bytes': f['payload-bytes'],
          'extensions/s': Math.round((n * 1000) / ms),
          'server cpu µs/extension': serverUs,
          ...(postgresUs === undefined ? {} : { 'postgres cpu µs/extension': postgresUs }),
          'one alone, answer bytes (?return=minimal / whole)': `${await alone('?return=minimal')} / ${await alone('')}`,
        },
      ],
      { flags: f },
    );
  } finally {
    await server.stop();
    if (onPostgres) await dropSchemas([schema]);
  }
}
