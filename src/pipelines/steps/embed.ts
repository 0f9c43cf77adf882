import type { Provider } from '../../providers/provider.js';
import { render } from '../template.js';
import type { StepContext } from '../definition.js';
import { StepError } from './step.js';

/** Embeds one text (output: a vector) or a list of texts (output: a list of vectors). */
export async function runEmbedStep(ctx: StepContext, provider: Provider): Promise<unknown> {
  const step = ctx.step;
  if (step.kind !== 'embed') throw new Error('not an embed step');
  const value = render(step.input, ctx);
  const many = Array.isArray(value);
  const texts = (many ? value : [value]).map((v) => (typeof v === 'string' ? v : JSON.stringify(v)));
  if (texts.length === 0) throw new StepError('there is nothing to embed', false);
  const { vectors } = await provider.embed({ model: step.model, input: texts }, ctx.signal);
  return many ? vectors : vectors[0];
}
