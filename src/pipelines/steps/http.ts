import { request } from 'undici';
import { parseRetryAfter } from '../../providers/provider.js';
import { render, renderText } from '../template.js';
import type { StepContext } from '../definition.js';
import { StepError } from './step.js';

/** Calls any URL. 2xx: the body (parsed when JSON). 408, 429, 5xx: retried, honouring Retry-After. Other 4xx: fail. */
export async function runHttpStep(ctx: StepContext): Promise<unknown> {
  const step = ctx.step;
  if (step.kind !== 'http') throw new Error('not an http step');
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(step.headers ?? {})) headers[k] = renderText(v, ctx);
  let body: string | undefined;
  if (step.body !== undefined) {
    body = JSON.stringify(render(step.body, ctx));
    headers['content-type'] ??= 'application/json';
  }
  const url = renderText(step.url, ctx);
  let res;
  try {
    res = await request(url, { method: step.method ?? (body === undefined ? 'GET' : 'POST'), headers, body, signal: ctx.signal });
  } catch (err) {
    if (ctx.signal.aborted) throw ctx.signal.reason;
    throw new StepError(`${url}: ${(err as Error).message}`, true);
  }
  const text = await res.body.text();
  if (res.statusCode === 408 || res.statusCode === 429 || res.statusCode >= 500) {
    throw new StepError(`${url} answered ${res.statusCode}`, true, parseRetryAfter(res.headers['retry-after']), { status: res.statusCode });
  }
  if (res.statusCode >= 400) throw new StepError(`${url} answered ${res.statusCode}: ${text.slice(0, 300)}`, false, undefined, { status: res.statusCode });
  const type = String(res.headers['content-type'] ?? '');
  if (!type.includes('json')) return text;
  try {
    return JSON.parse(text);
  } catch {
    throw new StepError(`${url} sent malformed JSON`, true);
  }
}
