import { Pool } from 'undici';
import { ProviderError, parseRetryAfter, type ChatRequest, type ChatResult, type EmbedRequest, type EmbedResult, type Provider } from './provider.js';

export interface OpenAiCompatibleOptions {
  name: string;
  /** Base URL including the version prefix, e.g. https://api.openai.com/v1. */
  baseUrl: string;
  /** Sent as a bearer token; never logged and never part of an error. */
  apiKey?: string;
  chatModel?: string;
  embedModel?: string;
  /** Connections kept open to the provider. */
  connections: number;
}

/**
 * Chat completions and embeddings over one undici Pool per provider: keep-alive connections,
 * bounded in number, so that many concurrent steps reuse a few sockets instead of opening one each.
 * Each call is one HTTP request; limits, timeouts and retries are the LimitedProvider's job.
 */
export class OpenAiCompatibleProvider implements Provider {
  readonly name: string;
  private readonly pool: Pool;
  private readonly path: string;
  private readonly headers: Record<string, string>;

  constructor(private readonly options: OpenAiCompatibleOptions) {
    this.name = options.name;
    const url = new URL(options.baseUrl);
    this.pool = new Pool(url.origin, { connections: options.connections, keepAliveTimeout: 30_000, pipelining: 1 });
    this.path = url.pathname.replace(/\/$/, '');
    this.headers = { 'content-type': 'application/json', accept: 'application/json' };
    if (options.apiKey) this.headers.authorization = `Bearer ${options.apiKey}`;
  }

  async chat(request: ChatRequest, signal: AbortSignal): Promise<ChatResult> {
    const model = request.model ?? this.options.chatModel ?? 'default';
    const body = await this.post('/chat/completions', {
      model,
      messages: request.messages,
      ...(request.temperature !== undefined ? { temperature: request.temperature } : {}),
      ...(request.maxTokens !== undefined ? { max_tokens: request.maxTokens } : {}),
      ...(request.json ? { response_format: { type: 'json_object' } } : {}),
    }, signal);
    const content = (body as { choices?: { message?: { content?: unknown } }[] }).choices?.[0]?.message?.content;
    if (typeof content !== 'string') throw this.malformed('the reply has no choices[0].message.content');
    const usage = (body as { usage?: Record<string, number> }).usage ?? {};
    return {
      content,
      model: String((body as { model?: string }).model ?? model),
      usage: {
        promptTokens: usage.prompt_tokens ?? 0,
        completionTokens: usage.completion_tokens ?? 0,
        totalTokens: usage.total_tokens ?? (usage.prompt_tokens ?? 0) + (usage.completion_tokens ?? 0),
      },
    };
  }

  async embed(request: EmbedRequest, signal: AbortSignal): Promise<EmbedResult> {
    const model = request.model ?? this.options.embedModel ?? 'default';
    const body = await this.post('/embeddings', { model, input: request.input }, signal);
    const data = (body as { data?: { embedding?: unknown; index?: number }[] }).data;
    if (!Array.isArray(data) || data.length !== request.input.length) throw this.malformed('the reply has no data[] with one embedding per input');
    const vectors: number[][] = new Array(data.length);
    for (const [i, item] of data.entries()) {
      if (!Array.isArray(item.embedding) || !item.embedding.every((x) => typeof x === 'number')) {
        throw this.malformed(`data[${i}].embedding is not an array of numbers`);
      }
      vectors[item.index ?? i] = item.embedding as number[];
    }
    const usage = (body as { usage?: { total_tokens?: number } }).usage;
    return { vectors, model: String((body as { model?: string }).model ?? model), usage: { totalTokens: usage?.total_tokens ?? 0 } };
  }

  close(): Promise<void> {
    return this.pool.close();
  }

  private async post(path: string, payload: unknown, signal: AbortSignal): Promise<unknown> {
    let res;
    try {
      res = await this.pool.request({ method: 'POST', path: this.path + path, headers: this.headers, body: JSON.stringify(payload), signal });
    } catch (err) {
      if (signal.aborted) throw signal.reason;
      throw new ProviderError(`${this.name}: ${(err as Error).message}`, { provider: this.name, retryable: true, kind: 'network' });
    }
    let text: string;
    try {
      text = await res.body.text();
    } catch (err) {
      if (signal.aborted) throw signal.reason;
      throw new ProviderError(`${this.name}: the reply broke off: ${(err as Error).message}`, { provider: this.name, retryable: true, kind: 'network' });
    }
    if (res.statusCode === 429 || res.statusCode >= 500 || res.statusCode === 408) {
      throw new ProviderError(`${this.name} answered ${res.statusCode}`, {
        provider: this.name,
        status: res.statusCode,
        retryable: true,
        retryAfterMs: parseRetryAfter(res.headers['retry-after']),
        kind: res.statusCode === 429 ? 'rate_limited' : 'http',
      });
    }
    if (res.statusCode >= 400) {
      // The provider's message helps; it never contains our key, which only travels in a header.
      throw new ProviderError(`${this.name} answered ${res.statusCode}: ${text.slice(0, 300)}`, {
        provider: this.name,
        status: res.statusCode,
        retryable: false,
        kind: 'http',
      });
    }
    try {
      return JSON.parse(text);
    } catch {
      throw this.malformed(`the reply is not JSON: ${JSON.stringify(text.slice(0, 100))}`);
    }
  }

  private malformed(what: string): ProviderError {
    // A malformed reply is often a proxy or overload glitch: worth another try.
    return new ProviderError(`${this.name}: ${what}`, { provider: this.name, retryable: true, kind: 'malformed' });
  }
}
