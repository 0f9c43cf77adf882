import { setTimeout as sleep } from 'node:timers/promises';
import { createHash } from 'node:crypto';
import { ProviderError, estimateTokens, type ChatRequest, type ChatResult, type EmbedRequest, type EmbedResult, type Provider } from './provider.js';

export interface SimulatedOptions {
  name: string;
  /**
   * Each call's latency, within [minMs, maxMs]: `uniform` (the default) draws evenly; `lognormal`
   * draws most calls near the low end with a long tail towards maxMs, as real LLM latencies are.
   */
  latency: { minMs: number; maxMs: number; distribution?: 'uniform' | 'lognormal' };
  /** Share of calls, 0–1, that fail with a retryable 503. */
  failureRate: number;
  /** Length of the vectors `embed` returns. */
  dimensions: number;
  random?: () => number;
}

/**
 * A provider with no network: it waits a configurable, random latency and answers deterministic
 * text and vectors derived from the input, failing a configurable share of calls. The demo and the
 * benchmarks run on it; tests of the real client use a local HTTP server instead.
 */
export class SimulatedProvider implements Provider {
  readonly name: string;
  private readonly random: () => number;

  constructor(private readonly options: SimulatedOptions) {
    this.name = options.name;
    this.random = options.random ?? Math.random;
  }

  async chat(request: ChatRequest, signal: AbortSignal): Promise<ChatResult> {
    await this.delay(signal);
    const last = request.messages[request.messages.length - 1]?.content ?? '';
    const content = request.json
      ? JSON.stringify({ summary: last.slice(0, 200), label: labelOf(last) })
      : `${labelOf(last)}: ${last.slice(0, 200)}`;
    const promptTokens = estimateTokens(request.messages.map((m) => m.content));
    const completionTokens = estimateTokens([content]);
    return { content, model: request.model ?? 'simulated', usage: { promptTokens, completionTokens, totalTokens: promptTokens + completionTokens } };
  }

  async embed(request: EmbedRequest, signal: AbortSignal): Promise<EmbedResult> {
    await this.delay(signal);
    return {
      vectors: request.input.map((text) => vectorOf(text, this.options.dimensions)),
      model: request.model ?? 'simulated',
      usage: { totalTokens: estimateTokens(request.input) },
    };
  }

  /** A share of the latency range, 0–1. The lognormal one has its median at about a fifth of the range. */
  private share(distribution: 'uniform' | 'lognormal'): number {
    if (distribution === 'uniform') return this.random();
    const normal = Math.sqrt(-2 * Math.log(1 - this.random())) * Math.cos(2 * Math.PI * this.random());
    return Math.min(1, Math.exp(Math.log(0.2) + 0.6 * normal));
  }

  private async delay(signal: AbortSignal): Promise<void> {
    const { minMs, maxMs, distribution = 'uniform' } = this.options.latency;
    await sleep(minMs + this.share(distribution) * (maxMs - minMs), undefined, { signal });
    if (this.random() < this.options.failureRate) {
      throw new ProviderError(`${this.name}: simulated failure`, { provider: this.name, status: 503, retryable: true, kind: 'http' });
    }
  }
}

/** A stable one-word label, so that the same text is always classified the same way. */
function labelOf(text: string): string {
  const labels = ['billing', 'service', 'safety', 'noise', 'transport'];
  return labels[createHash('sha1').update(text).digest()[0] % labels.length];
}

/**
 * A unit vector built from the text's words, so that texts sharing words are close in cosine
 * similarity — enough for grouping into cases to behave as it would on real embeddings.
 */
export function vectorOf(text: string, dimensions: number): number[] {
  const v = new Array<number>(dimensions).fill(0);
  for (const word of text.toLowerCase().match(/[a-z0-9]+/g) ?? []) {
    const h = createHash('sha1').update(word).digest();
    v[h.readUInt32BE(0) % dimensions] += 1;
    v[h.readUInt32BE(4) % dimensions] += 0.5;
  }
  const norm = Math.hypot(...v) || 1;
  return v.map((x) => x / norm);
}
