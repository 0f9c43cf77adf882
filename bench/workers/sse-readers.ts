/**
 * SSE readers for the `stream` scenario, in a process of their own so that their work does not
 * delay the agent's: `READERS` EventSources (undici's) on one task's stream. Each output chunk
 * carries the time it was written (`<epoch ms>|`); lateness is the time it arrives minus that.
 * Prints `ready` once every stream is open, and at `end` (or SIGTERM) one JSON line of the lateness
 * samples and the chunks each reader got.
 */
import { EventSource } from 'undici';

const url = process.env.STREAM_URL!;
const readers = Number(process.env.READERS ?? 10);
const lateness: number[] = [];
const chunks: number[] = new Array(readers).fill(0);
let open = 0;
let ended = 0;
const sources: EventSource[] = [];

const finish = () => {
  for (const s of sources) s.close();
  process.stdout.write(`${JSON.stringify({ lateness, chunks })}\n`);
  process.exit(0);
};

for (let i = 0; i < readers; i++) {
  const source = new EventSource(url);
  sources.push(source);
  source.addEventListener('open', () => {
    if (++open === readers) process.stdout.write('ready\n');
  });
  source.addEventListener('output', (e) => {
    const now = Date.now();
    const { text } = JSON.parse((e as MessageEvent).data) as { text: string };
    for (const stamp of text.split('|')) {
      if (stamp === '') continue;
      lateness.push(now - Number(stamp));
      chunks[i]++;
    }
  });
  source.addEventListener('end', () => {
    source.close();
    if (++ended === readers) finish();
  });
}
process.on('SIGTERM', finish);
