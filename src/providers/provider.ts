/** A chat message in the OpenAI wire format. */
export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

export interface ChatRequest {
  model?: string;
  messages: ChatMessage[];
  temperature?: number;
  maxTokens?: number;
  /** Ask for a JSON object back (OpenAI's response_format json_object). */
  json?: boolean;
}

export interface ChatResult {
  content: string;
  model: string;
  usage: { promptTokens: number; completionTokens: number; totalTokens: number };
}

export interface EmbedRequest {
  model?: string;
  input: string[];
}

export interface EmbedResult {
  vectors: number[][];
  model: string;
  usage: { totalTokens: number };
}

/** What the pipeline steps call. Every call takes an AbortSignal: a step's timeout or cancellation ends it. */
export interface Provider {
  readonly name: string;
  chat(request: ChatRequest, signal: AbortSignal): Promise<ChatResult>;
  embed(request: EmbedRequest, signal: AbortSignal): Promise<EmbedResult>;
}

/**
 * A failed provider call, saying whether trying again can help and, when the provider said so
 * (Retry-After), how long to wait first. Steps and the provider's own retries steer by it.
 */
export class ProviderError extends Error {
  constructor(
    message: string,
    readonly details: { provider: string; status?: number; retryable: boolean; retryAfterMs?: number; kind: ProviderFailure },
  ) {
    super(message);
    this.name = 'ProviderError';
  }

  get retryable(): boolean {
    return this.details.retryable;
  }

  toJSON() {
    return { message: this.message, ...this.details };
  }
}

export type ProviderFailure = 'http' | 'rate_limited' | 'timeout' | 'network' | 'malformed' | 'circuit_open' | 'config';

/** Retry-After is either seconds or an HTTP date; anything else is ignored. */
export function parseRetryAfter(value: string | string[] | undefined, now: number = Date.now()): number | undefined {
  const raw = Array.isArray(value) ? value[0] : value;
  if (raw === undefined || raw.trim() === '') return undefined;
  const seconds = Number(raw);
  if (Number.isFinite(seconds)) return Math.max(0, Math.round(seconds * 1000));
  const date = Date.parse(raw);
  return Number.isFinite(date) ? Math.max(0, date - now) : undefined;
}

/** A rough token count (about 4 characters a token) to charge the tokens/min budget before the provider says. */
export function estimateTokens(texts: readonly string[]): number {
  let chars = 0;
  for (const t of texts) chars += t.length;
  return Math.ceil(chars / 4) + texts.length;
}
