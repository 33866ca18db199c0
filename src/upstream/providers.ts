// Upstream providers: named entries of a kind (Anthropic, OpenAI, Azure OpenAI, Claude on Amazon
// Bedrock, Vertex AI or Microsoft Foundry, or any server that speaks one of their APIs), each with a
// base URL, one or more real credentials, and its own connection pool. Upstream addresses come from
// configuration only, never from a client.
import { rootCertificates } from 'node:tls';
import type { AwsCredentialIdentityProvider } from '@smithy/types';
import { Agent, ProxyAgent, type Dispatcher } from 'undici';
import { createAwsSigner } from '../cloud/aws.ts';
import { createGoogleTokenSource } from '../cloud/google.ts';
import type { BodyBytes } from '../wire/body-bytes.ts';
import { BEDROCK_PROFILE_PREFIXES } from '../wire/claude-models.ts';
import { GatewayError } from '../wire/errors.ts';
import { dropBetas, mergeBeta, type HeaderMap } from '../wire/headers.ts';
import type { Dialect } from '../wire/dialect.ts';
import { dropUndefined, httpUrl, ValidationError } from '../util/validation.ts';

/**
 * What an upstream speaks. `azure-openai`: OpenAI's API with Azure's `api-key` header and
 * `api-version`. `bedrock`: Claude on Amazon Bedrock (InvokeModel, signed with AWS SigV4 or a
 * Bedrock API key). `vertex`: Claude on Vertex AI (rawPredict, a Google OAuth token). `foundry`:
 * Claude on Microsoft Foundry (the Messages API under the resource's URL, its `x-api-key`).
 */
export type UpstreamKind = 'anthropic' | 'openai' | 'azure-openai' | 'bedrock' | 'vertex' | 'foundry';

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
  /** Bedrock and Vertex: the region (`us-east-1`; Vertex also `global`). */
  region?: string;
  /**
   * Bedrock: the cross-region inference profile prefix (`us`, `eu`, `apac`, `global`) put before
   * the ids made for Anthropic model names (`claude-sonnet-4-5` -> `us.anthropic.claude-sonnet-4-5`).
   */
  inferenceProfile?: string;
  /** Bedrock: a profile of the AWS shared config files. Default: the default credential chain. */
  awsProfile?: string;
  /** Bedrock, for hosts embedding the gateway: AWS credentials of their own (the chain is not used). */
  awsCredentials?: AwsCredentialIdentityProvider;
  /** Vertex: the Google Cloud project. */
  projectId?: string;
  /** Vertex: a service-account or user credentials file. Default: Application Default Credentials. */
  googleCredentialsFile?: string;
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

/** One attempt as it will go upstream: what a credential adds to, and what a signature covers. */
export interface OutgoingRequest {
  method: string;
  origin: string;
  /** Path and query exactly as sent (the upstream's prefix included). */
  path: string;
  headers: HeaderMap;
  body: BodyBytes | null;
}

/** One real credential of one upstream; `id` names it in logs and health tracking, never its value. */
export interface Credential {
  id: string;
  /** Adds the credential to `request.headers`: at once, or once a token is fetched or a signature made. */
  apply(request: OutgoingRequest): void | Promise<void>;
}

/** Where Claude lives in a cloud upstream: its region, Vertex's project, Bedrock's inference profile. */
interface CloudPlace {
  region: string;
  project?: string;
  inferenceProfile?: string;
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
  /** Bedrock and Vertex upstreams only. */
  cloud?: CloudPlace;
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

export const PROVIDER_KINDS: readonly UpstreamKind[] = ['anthropic', 'openai', 'azure-openai', 'bedrock', 'vertex', 'foundry'];

function kindOf(name: string, config: ProviderConfig): UpstreamKind {
  if (config.kind) {
    if (!PROVIDER_KINDS.includes(config.kind)) throw new ValidationError(`providers.${name}.kind`, `must be one of ${PROVIDER_KINDS.join(', ')}`);
    return config.kind;
  }
  if (name === 'anthropic' || name === 'openai') return name;
  throw new ValidationError(`providers.${name}.kind`, `is required (${PROVIDER_KINDS.join(', ')})`);
}

function credentialsOf(name: string, kind: UpstreamKind, config: ProviderConfig): Credential[] {
  const keys = [...(config.apiKey ? [config.apiKey] : []), ...(config.apiKeys ?? []).filter(Boolean)];
  const credentials: Credential[] = keys.map((key, index) => ({
    id: `${name}#${index + 1}`,
    apply({ headers }) {
      if (kind === 'anthropic' || kind === 'foundry') headers['x-api-key'] = key;
      else if (kind === 'azure-openai') headers['api-key'] = key;
      else headers.authorization = `Bearer ${key}`; // OpenAI; Bedrock API keys
    },
  }));
  if (kind === 'anthropic' && config.oauthToken) {
    const token = config.oauthToken;
    credentials.push({
      id: `${name}#oauth`,
      apply({ headers }) {
        headers.authorization = `Bearer ${token}`;
        headers['anthropic-beta'] = mergeBeta(headers['anthropic-beta'], OAUTH_BETA);
      },
    });
  }
  // Without a Bedrock API key, the host's AWS identity signs; Vertex always takes a Google token.
  if (kind === 'bedrock' && credentials.length === 0) credentials.push(awsCredential(name, config));
  if (kind === 'vertex') credentials.push(googleCredential(name, config));
  return credentials;
}

function awsCredential(name: string, config: ProviderConfig): Credential {
  const signer = createAwsSigner({ region: config.region!, profile: config.awsProfile, credentials: config.awsCredentials });
  return {
    id: `${name}#aws`,
    async apply(request) {
      // Signed last, over the bytes and path that go out; only host, content-type and x-amz-* are
      // signed, so headers the HTTP client adds on the way cannot break the signature.
      const host = new URL(request.origin).host;
      Object.assign(request.headers, await signer.sign({ ...request, body: request.body?.whole() ?? null, headers: { ...request.headers, host } }), { host });
    },
  };
}

function googleCredential(name: string, config: ProviderConfig): Credential {
  const tokens = createGoogleTokenSource({ credentialsFile: config.googleCredentialsFile, projectId: config.projectId });
  return {
    id: `${name}#google`,
    async apply({ headers }) {
      headers.authorization = `Bearer ${await tokens.token()}`;
    },
  };
}

/** Where Claude lives for a cloud upstream, checked; undefined for the others. */
function cloudPlace(name: string, kind: UpstreamKind, config: ProviderConfig): CloudPlace | undefined {
  if (kind !== 'bedrock' && kind !== 'vertex') return undefined;
  if (!config.region) throw new ValidationError(`providers.${name}.region`, `is required for ${kind}`);
  if (!/^[a-z0-9-]{1,32}$/.test(config.region))
    throw new ValidationError(`providers.${name}.region`, 'must be a region name (us-east-1, europe-west1, global)');
  if (kind === 'vertex' && !config.projectId) throw new ValidationError(`providers.${name}.projectId`, 'is required for vertex');
  if (config.inferenceProfile !== undefined && !BEDROCK_PROFILE_PREFIXES.has(config.inferenceProfile)) {
    throw new ValidationError(`providers.${name}.inferenceProfile`, `must be one of ${[...BEDROCK_PROFILE_PREFIXES].join(', ')}`);
  }
  return { region: config.region, project: config.projectId, inferenceProfile: config.inferenceProfile };
}

/** The public endpoint of a kind without a fixed one. */
function defaultBaseUrl(kind: UpstreamKind, config: ProviderConfig): string | undefined {
  if (kind === 'anthropic' || kind === 'openai') return DEFAULT_BASE_URLS[kind];
  if (kind === 'bedrock') return `https://bedrock-runtime.${config.region}.amazonaws.com`;
  if (kind === 'vertex') return config.region === 'global' ? 'https://aiplatform.googleapis.com' : `https://${config.region}-aiplatform.googleapis.com`;
  return undefined; // Azure and Foundry: the resource's own URL
}

/** Which clients an upstream of `kind` serves: every Claude kind serves Anthropic-dialect clients. */
function dialectOfKind(kind: UpstreamKind): Dialect {
  return kind === 'openai' || kind === 'azure-openai' ? 'openai' : 'anthropic';
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
    const cloud = cloudPlace(name, kind, provider);
    const base = provider.baseUrl ?? defaultBaseUrl(kind, provider);
    if (!base) throw new ValidationError(`providers.${name}.baseUrl`, `is required for ${kind}`);
    const timeouts = upstreamTimeouts(provider.timeouts);
    upstreams.set(name, {
      name,
      kind,
      dialect: dialectOfKind(kind),
      ...parseBaseUrl(base, `providers.${name}.baseUrl`),
      query: provider.apiVersion ? `api-version=${encodeURIComponent(provider.apiVersion)}` : undefined,
      cloud,
      credentials: credentialsOf(name, kind, provider),
      dropBetas: new Set(provider.dropBetas ?? []),
      timeouts,
      dispatcher: createDispatcher(timeouts.connectMs, network),
    });
  }
  return upstreams;
}

/**
 * Adds `credential` to one attempt on `upstream` (a promise when it fetches a token or signs).
 * Betas the upstream rejects are dropped first: a signature covers the final request.
 */
export function authenticate(upstream: Upstream, credential: Credential | undefined, request: OutgoingRequest): void | Promise<void> {
  if (!credential) {
    throw new GatewayError('provider_not_configured', `the gateway has no credential configured for provider ${upstream.name}`);
  }
  const { headers } = request;
  if (upstream.dropBetas.size > 0 && headers['anthropic-beta'] !== undefined) {
    const kept = dropBetas(headers['anthropic-beta'], upstream.dropBetas);
    if (kept) headers['anthropic-beta'] = kept;
    else delete headers['anthropic-beta'];
  }
  return credential.apply(request);
}

/** The upstream path for a client's path and query. */
export function upstreamPath(upstream: Upstream, pathAndQuery: string): string {
  if (!upstream.query) return upstream.pathPrefix + pathAndQuery;
  return `${upstream.pathPrefix}${pathAndQuery}${pathAndQuery.includes('?') ? '&' : '?'}${upstream.query}`;
}

export async function closeUpstreams(upstreams: Map<string, Upstream>): Promise<void> {
  await Promise.all([...upstreams.values()].map((upstream) => upstream.dispatcher.close().catch(() => undefined)));
}
