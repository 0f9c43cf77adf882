/**
 * One TypeScript SDK agent for the python-drain bench: `drain` tasks over WebSocket at the given
 * concurrency, completing each with its payload. Prints `ready` once connected; SIGTERM stops it.
 */
import { FleetClient } from '../../src/client/index.js';

const [url, apiKey, concurrency] = process.argv.slice(2);
const agent = new FleetClient({ url, apiKey }).agent({ name: 'drain-ts', capabilities: ['drain'], concurrency: Number(concurrency), transport: 'ws' });
await agent.work(async (task) => task.payload);
process.stdout.write('ready\n');
process.on('SIGTERM', () => void agent.stop().then(() => process.exit(0)));
