// Upstream providers: named entries of a kind (Anthropic, OpenAI, Azure OpenAI, or any server that
// speaks one of their APIs), each with a base URL, one or more real credentials, and its own
// connection pool. Upstream addresses come from configuration only, never from a client.
import { rootCertificates } from 'node:tls';
import { Agent, ProxyAgent, type Dispatcher } from 'undici';
import { GatewayError } from '../wire/errors.ts';
import { dropBetas, mergeBeta, type HeaderMap } from '../wire/headers.ts';
import type { Dialect } from '../wire/dialect.ts';
import { dropUndefined, httpUrl, ValidationError } from '../util/validation.ts';

/** What an upstream speaks. `azure-openai`: OpenAI's API with Azure's `api-key` header and `api-version`. */
export type UpstreamKind = 'anthropic' | 'openai' | 'azure-openai';

export interface UpstreamTimeouts {
  /** TCP/TLS connect. Default 10 s. */
  connectMs?: number;
  /** Until the response headers. Default 10 min (long non-streaming answers). */
  firstByteMs?: number;
  /** Longest silence mid-response. Default 5 min. */
  idleMs?: number;
  /** The whole exchange. Default none. */
  totalMs?: number;
}

export interface ProviderConfig {
  /** Default: the provider's name when it is `anthropic` or `openai`. */
  kind?: UpstreamKind;
  /** Default https://api.anthropic.com / https://api.openai.com; may carry a path prefix. */
  baseUrl?: string;
  /** An API key (`x-api-key` for Anthropic, a bearer token for OpenAI, `api-key` for Azure). */
  apiKey?: string;
  /** Several API keys: calls are spread over them and fail over from one that is failing. */
  apiKeys?: string[];
  /** Anthropic only: a Claude subscription OAuth token (bearer, with the `oauth-2025-04-20` beta). */
  oauthToken?: string;
  /** `anthropic-beta` values this upstream rejects (Bedrock or Vertex fronts): dropped for it only. */
  dropBetas?: string[];
  /** Azure: the `api-version` query parameter added to every call. */
  apiVersion?: string;
  timeouts?: UpstreamTimeouts;
}

/** Named providers. `anthropic` and `openai` are the defaults for their clients' requests. */
export type ProvidersConfig = Record<string, ProviderConfig>;

/** How the gateway reaches the internet: an outbound proxy and extra trusted CAs. */
export interface NetworkOptions {
  /** An http(s) proxy every upstream connection goes through (CONNECT for https). */
  proxyUrl?: string;
  /** PEM certificates trusted besides the system's (a corporate TLS-inspecting proxy). */
  extraCaPem?: string;
}

const DEFAULT_BASE_URLS: Record<'anthropic' | 'openai', string> = {
  anthropic: 'https://api.anthropic.com',
  openai: 'https://api.openai.com',
};

const OAUTH_BETA = 'oauth-2025-04-20';

/** One real credential of one upstream; `id` names it in logs and health tracking, never its value. */
export interface Credential {
  id: string;
  apply(headers: HeaderMap): void;
}

/** A resolved upstream. */
export interface Upstream {
  name: string;
  kind: UpstreamKind;
  /** Which clients' requests it can serve. */
  dialect: Dialect;
  origin: string;
  pathPrefix: string;
  /** Added to every path's query (Azure's api-version). */
  query?: string;
  credentials: Credential[];
  dropBetas: ReadonlySet<string>;
  timeouts: Required<Omit<UpstreamTimeouts, 'totalMs'>> & { totalMs?: number };
  dispatcher: Dispatcher;
}

/**
 * Real credentials from the standard environment variables (never from argv). Upstream URLs use
 * gateway-specific names: the host's own ANTHROPIC_BASE_URL may well point at this gateway.
 */
export function providersFromEnv(env: NodeJS.ProcessEnv = process.env): ProvidersConfig {
  return {
    anthropic: {
      baseUrl: env.GATEWAY_ANTHROPIC_BASE_URL || undefined,
      apiKey: env.ANTHROPIC_API_KEY || undefined,
      oauthToken: env.CLAUDE_CODE_OAUTH_TOKEN || undefined,
    },
    openai: {
      baseUrl: env.GATEWAY_OPENAI_BASE_URL || undefined,
      apiKey: env.OPENAI_API_KEY || undefined,
    },
  };
}

/** Where an upstream is: the origin and the path prefix every call's path goes under. */
export function parseBaseUrl(raw: string, field: string): { origin: string; pathPrefix: string } {
  const url = httpUrl(raw, field);
  return { origin: url.origin, pathPrefix: url.pathname.replace(/\/+$/, '') };
}

/** The timeouts of an upstream (a provider or GitHub) with the defaults filled in. */
export function upstreamTimeouts(timeouts: UpstreamTimeouts | undefined): Upstream['timeouts'] {
  return { connectMs: 10_000, firstByteMs: 600_000, idleMs: 300_000, ...dropUndefined(timeouts ?? {}) };
}

function kindOf(name: string, config: ProviderConfig): UpstreamKind {
  if (config.kind) return config.kind;
  if (name === 'anthropic' || name === 'openai') return name;
  throw new ValidationError(`providers.${name}.kind`, 'is required (anthropic, openai or azure-openai)');
}

function credentialsOf(name: string, kind: UpstreamKind, config: ProviderConfig): Credential[] {
  const keys = [...(config.apiKey ? [config.apiKey] : []), ...(config.apiKeys ?? []).filter(Boolean)];
  const credentials: Credential[] = keys.map((key, index) => ({
    id: `${name}#${index + 1}`,
    apply(headers) {
      if (kind === 'anthropic') headers['x-api-key'] = key;
      else if (kind === 'azure-openai') headers['api-key'] = key;
      else headers.authorization = `Bearer ${key}`;
    },
  }));
  if (kind === 'anthropic' && config.oauthToken) {
    const token = config.oauthToken;
    credentials.push({
      id: `${name}#oauth`,
      apply(headers) {
        headers.authorization = `Bearer ${token}`;
        headers['anthropic-beta'] = mergeBeta(headers['anthropic-beta'], OAUTH_BETA);
      },
    });
  }
  return credentials;
}

/** One connection pool per upstream, with its connect timeout, through the proxy if there is one. */
export function createDispatcher(connectMs: number, network: NetworkOptions = {}): Dispatcher {
  const ca = network.extraCaPem ? [...rootCertificates, network.extraCaPem] : undefined;
  const options = { keepAliveTimeout: 30_000, connect: { timeout: connectMs, keepAlive: true, ...(ca ? { ca } : {}) } };
  if (!network.proxyUrl) return new Agent(options);
  return new ProxyAgent({ uri: network.proxyUrl, ...options, requestTls: ca ? { ca } : undefined });
}

export function resolveUpstreams(config: ProvidersConfig, network: NetworkOptions = {}): Map<string, Upstream> {
  const upstreams = new Map<string, Upstream>();
  for (const [name, provider] of Object.entries(config)) {
    if (!provider) continue;
    const kind = kindOf(name, provider);
    if (provider.oauthToken && kind !== 'anthropic') throw new ValidationError(`providers.${name}.oauthToken`, 'is for Anthropic only');
    const base = provider.baseUrl ?? (kind === 'azure-openai' ? undefined : DEFAULT_BASE_URLS[kind]);
    if (!base) throw new ValidationError(`providers.${name}.baseUrl`, `is required for ${kind}`);
    const timeouts = upstreamTimeouts(provider.timeouts);
    upstreams.set(name, {
      name,
      kind,
      dialect: kind === 'anthropic' ? 'anthropic' : 'openai',
      ...parseBaseUrl(base, `providers.${name}.baseUrl`),
      query: provider.apiVersion ? `api-version=${encodeURIComponent(provider.apiVersion)}` : undefined,
      credentials: credentialsOf(name, kind, provider),
      dropBetas: new Set(provider.dropBetas ?? []),
      timeouts,
      dispatcher: createDispatcher(timeouts.connectMs, network),
    });
  }
  return upstreams;
}

/** Prepares headers for one attempt on `upstream` with `credential`. */
export function authenticate(upstream: Upstream, credential: Credential | undefined, headers: HeaderMap): void {
  if (!credential) {
    throw new GatewayError('provider_not_configured', `the gateway has no credential configured for provider ${upstream.name}`);
  }
  credential.apply(headers);
  if (upstream.dropBetas.size > 0 && headers['anthropic-beta'] !== undefined) {
    const kept = dropBetas(headers['anthropic-beta'], upstream.dropBetas);
    if (kept) headers['anthropic-beta'] = kept;
    else delete headers['anthropic-beta'];
  }
}

/** The upstream path for a client's path and query. */
export function upstreamPath(upstream: Upstream, pathAndQuery: string): string {
  if (!upstream.query) return upstream.pathPrefix + pathAndQuery;
  return `${upstream.pathPrefix}${pathAndQuery}${pathAndQuery.includes('?') ? '&' : '?'}${upstream.query}`;
}

export async function closeUpstreams(upstreams: Map<string, Upstream>): Promise<void> {
  await Promise.all([...upstreams.values()].map((upstream) => upstream.dispatcher.close().catch(() => undefined)));
}
