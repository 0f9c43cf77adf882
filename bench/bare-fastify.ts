/** The baseline: a bare Fastify app whose one route answers {}, run in its own process like fleetd. */
import Fastify from 'fastify';

const app = Fastify({ logger: false });
app.post('/bare', async () => ({}));
app.get('/readyz', async () => ({}));
const url = await app.listen({ host: '127.0.0.1', port: 0 });
process.stdout.write(`${JSON.stringify({ msg: 'listening', url })}\n`);
