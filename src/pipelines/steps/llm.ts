import type { ChatMessage, Provider } from '../../providers/provider.js';
import { renderText } from '../template.js';
import type { StepContext } from '../definition.js';
import { StepError } from './step.js';

/** A chat completion; with `json: true` the reply is parsed, and a reply that is not JSON is retried. */
export async function runLlmStep(ctx: StepContext, provider: Provider): Promise<unknown> {
  const step = ctx.step;
  if (step.kind !== 'llm') throw new Error('not an llm step');
  const messages: ChatMessage[] = [];
  if (step.system) messages.push({ role: 'system', content: renderText(step.system, ctx) });
  messages.push({ role: 'user', content: renderText(step.prompt, ctx) });
  const reply = await provider.chat(
    { model: step.model, messages, json: step.json, temperature: step.temperature, maxTokens: step.maxTokens },
    ctx.signal,
  );
  if (!step.json) return reply.content;
  try {
    return JSON.parse(reply.content);
  } catch {
    throw new StepError(`the model's reply is not the JSON asked for: ${JSON.stringify(reply.content.slice(0, 100))}`, true);
  }
}
