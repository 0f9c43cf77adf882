import { LimitedProvider, defaultProviderLimits, type ProviderLimits } from './limited-provider.js';
import { OpenAiCompatibleProvider } from './openai-compatible.js';
import { SimulatedProvider } from './simulated.js';

/** A provider as a pipelines file declares it. */
export type ProviderConfig =
  | {
      name: string;
      kind: 'openai';
      baseUrl: string;
      /** Name of the environment variable holding the API key; the key itself never sits in a file. */
      apiKeyEnv?: string;
      chatModel?: string;
      embedModel?: string;
      /** Connections in the provider's pool. Defaults to maxConcurrent. */
      connections?: number;
      limits?: Partial<ProviderLimits>;
    }
  | {
      name: string;
      kind: 'simulated';
      latency?: { minMs: number; maxMs: number; distribution?: 'uniform' | 'lognormal' };
      failureRate?: number;
      dimensions?: number;
      limits?: Partial<ProviderLimits>;
    };

export class ProviderConfigError extends Error {
  constructor(provider: string, field: string, reason: string) {
    super(`provider ${provider}: ${field} ${reason}`);
    this.name = 'ProviderConfigError';
  }
}

/** The server's providers, by name, each wrapped in its limits. Built once at start-up. */
export class ProviderRegistry {
  private readonly providers = new Map<string, LimitedProvider>();
  private readonly closers: (() => Promise<void>)[] = [];

  constructor(configs: ProviderConfig[], env: NodeJS.ProcessEnv = process.env) {
    for (const c of configs) this.add(c, env);
  }

  get(name: string): LimitedProvider {
    const p = this.providers.get(name);
    if (!p) throw new Error(`no provider ${name}`);
    return p;
  }

  names(): Set<string> {
    return new Set(this.providers.keys());
  }

  usage() {
    return [...this.providers.values()].map((p) => p.usage());
  }

  async close(): Promise<void> {
    await Promise.all(this.closers.map((close) => close()));
  }

  private add(c: ProviderConfig, env: NodeJS.ProcessEnv): void {
    const raw = c as unknown as Record<string, unknown>;
    const name = typeof raw?.name === 'string' && raw.name !== '' ? raw.name : '(unnamed)';
    const fail = (field: string, reason: string): never => {
      throw new ProviderConfigError(name, field, reason);
    };
    if (name === '(unnamed)') fail('name', 'is required');
    if (this.providers.has(name)) fail('name', 'is used by another provider');
    const limits: ProviderLimits = { ...defaultProviderLimits };
    for (const [key, value] of Object.entries(raw.limits ?? {})) {
      if (!(key in defaultProviderLimits)) fail(`limits.${key}`, 'is not a known limit');
      if (!Number.isSafeInteger(value) || (value as number) < 0) fail(`limits.${key}`, 'must be a whole number of at least 0');
      limits[key as keyof ProviderLimits] = value as number;
    }
    if (limits.maxConcurrent < 1) fail('limits.maxConcurrent', 'must be at least 1');
    if (limits.timeoutMs < 1) fail('limits.timeoutMs', 'must be at least 1');
    if (limits.breakerFailures < 1) fail('limits.breakerFailures', 'must be at least 1');
    if (c.kind === 'openai') {
      let url: URL | undefined;
      try {
        url = new URL(c.baseUrl);
      } catch {
        fail('baseUrl', 'must be an http(s) URL');
      }
      if (url!.protocol !== 'http:' && url!.protocol !== 'https:') fail('baseUrl', 'must be an http(s) URL');
      let apiKey: string | undefined;
      if (c.apiKeyEnv !== undefined) {
        apiKey = env[c.apiKeyEnv];
        if (!apiKey) fail('apiKeyEnv', `names ${c.apiKeyEnv}, which is not set`);
      }
      const inner = new OpenAiCompatibleProvider({
        name,
        baseUrl: c.baseUrl,
        apiKey,
        chatModel: c.chatModel,
        embedModel: c.embedModel,
        connections: c.connections ?? limits.maxConcurrent,
      });
      this.closers.push(() => inner.close());
      this.providers.set(name, new LimitedProvider(inner, limits));
    } else if (c.kind === 'simulated') {
      const latency = c.latency ?? { minMs: 50, maxMs: 200 };
      if (!(latency.minMs >= 0 && latency.maxMs >= latency.minMs)) fail('latency', 'needs 0 ≤ minMs ≤ maxMs');
      if (latency.distribution !== undefined && latency.distribution !== 'uniform' && latency.distribution !== 'lognormal') {
        fail('latency.distribution', 'must be uniform or lognormal');
      }
      const failureRate = c.failureRate ?? 0;
      if (!(failureRate >= 0 && failureRate <= 1)) fail('failureRate', 'must be from 0 to 1');
      const inner = new SimulatedProvider({ name, latency, failureRate, dimensions: c.dimensions ?? 64 });
      this.providers.set(name, new LimitedProvider(inner, limits));
    } else fail('kind', 'must be openai or simulated');
  }
}
