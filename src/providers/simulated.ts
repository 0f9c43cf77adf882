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

/**
 * What the simulation understands of a complaint: words that name the same thing map to one
 * concept, and each concept belongs to a class. The class names themselves are not evidence (a
 * prompt that lists the classes names them all). Anything else is hashed as a plain word.
 */
const CONCEPTS: Record<string, { label: string; words: string[] }> = {
  streetlight: { label: 'safety', words: ['streetlight', 'streetlamp', 'lamp', 'lamppost', 'light', 'lighting'] },
  broken: { label: 'safety', words: ['out', 'broken', 'dark', 'faulty', 'flicker', 'flickering', 'working', 'unlit', 'damaged'] },
  road: { label: 'safety', words: ['pothole', 'road', 'pavement', 'sidewalk', 'crack', 'hole', 'crossing'] },
  danger: { label: 'safety', words: ['dangerous', 'unsafe', 'danger', 'hazard', 'accident', 'fell', 'injured'] },
  waste: { label: 'service', words: ['bin', 'bins', 'rubbish', 'garbage', 'trash', 'waste', 'litter', 'collected', 'collection', 'recycling'] },
  water: { label: 'service', words: ['water', 'leak', 'leaking', 'flood', 'flooding', 'pipe', 'drain', 'sewer'] },
  sound: { label: 'noise', words: ['loud', 'music', 'party', 'barking', 'shouting', 'construction', 'drilling'] },
  transit: { label: 'transport', words: ['bus', 'buses', 'train', 'tram', 'late', 'delayed', 'timetable', 'route', 'stop'] },
  charge: { label: 'billing', words: ['bill', 'charged', 'overcharged', 'invoice', 'refund', 'fee', 'payment', 'tax'] },
};
const CONCEPT_OF = new Map(Object.entries(CONCEPTS).flatMap(([concept, { words }]) => words.map((w) => [w, concept] as const)));
/** Two words that mean one thing, and abbreviations, read as the one word. */
const SAME_AS: Record<string, string> = { 'street light': 'streetlight', 'street lamp': 'streetlamp', 'lamp post': 'lamppost', st: 'street', ave: 'avenue', rd: 'road' };
const STOPWORDS = new Set(
  'a an and are as at be been but by for from has have i in is it its my near now of on or our since so that the there this to was we were with week weeks day days night nights last every still again please not no'.split(' '),
);

/** The complaint's words, normalised: lower case, joined where two words name one thing, without stopwords. */
function wordsOf(text: string): string[] {
  let lower = ` ${text.toLowerCase().replace(/[^a-z0-9]+/g, ' ')} `;
  for (const [pair, one] of Object.entries(SAME_AS)) lower = lower.replaceAll(` ${pair} `, ` ${one} `);
  return lower.split(' ').filter((w) => w !== '' && !STOPWORDS.has(w));
}

/**
 * The class a complaint's concepts point to most (ties to the first named), so that the same
 * complaint is always classified the same way, and plausibly; text with none gets a stable class
 * of its hash.
 */
export function labelOf(text: string): string {
  const votes = new Map<string, number>();
  for (const w of wordsOf(text)) {
    const concept = CONCEPT_OF.get(w);
    if (concept) votes.set(CONCEPTS[concept].label, (votes.get(CONCEPTS[concept].label) ?? 0) + 1);
  }
  const best = [...votes].sort((a, b) => b[1] - a[1])[0];
  if (best) return best[0];
  const labels = ['billing', 'service', 'safety', 'noise', 'transport'];
  return labels[createHash('sha1').update(text).digest()[0] % labels.length];
}

/** How much a concept weighs against a plain word: what a complaint is about matters more than how it is put. */
const CONCEPT_WEIGHT = 3;

/**
 * A unit vector of the text's concepts and words (each counted once, hashed with a sign so that
 * collisions cancel out rather than add up): complaints about the same thing in other words are
 * close in cosine similarity, unrelated ones are not — enough for grouping into cases to behave as
 * it would on real embeddings.
 */
export function vectorOf(text: string, dimensions: number): number[] {
  const v = new Array<number>(dimensions).fill(0);
  const features = new Map<string, number>();
  for (const w of wordsOf(text)) {
    const concept = CONCEPT_OF.get(w);
    if (concept) features.set(`concept:${concept}`, CONCEPT_WEIGHT);
    else features.set(`word:${w.length > 4 ? w.replace(/(ing|ed|es|s)$/, '') : w}`, 1);
  }
  for (const [feature, weight] of features) {
    const h = createHash('sha1').update(feature).digest();
    v[h.readUInt32BE(0) % dimensions] += h[4] & 1 ? weight : -weight;
  }
  const norm = Math.hypot(...v) || 1;
  return v.map((x) => x / norm);
}
