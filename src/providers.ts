// Upstream providers: where requests go and which real credential they carry.
// Upstream addresses come from configuration only, never from anything a client sends.
import { GatewayError } from './errors.ts';
import { mergeBeta, type HeaderMap } from './headers.ts';
import type { ProviderKind } from './routes.ts';

export interface AnthropicConfig {
  /** Default https://api.anthropic.com. May carry a path prefix. */
  baseUrl?: string;
  /** An API key, sent as `x-api-key`. */
  apiKey?: string;
  /** A Claude subscription OAuth token, sent as a bearer token with the `oauth-2025-04-20` beta. */
  oauthToken?: string;
}

export interface OpenAIConfig {
  /** Default https://api.openai.com (without `/v1`: the client's path carries it). */
  baseUrl?: string;
  apiKey?: string;
}

export interface ProvidersConfig {
  anthropic?: AnthropicConfig;
  openai?: OpenAIConfig;
}

export const DEFAULT_BASE_URLS: Record<ProviderKind, string> = {
  anthropic: 'https://api.anthropic.com',
  openai: 'https://api.openai.com',
};

const OAUTH_BETA = 'oauth-2025-04-20';

/** A resolved upstream: origin and path prefix for undici, and how to authenticate to it. */
export interface Upstream {
  kind: ProviderKind;
  origin: string;
  pathPrefix: string;
  /** Adds the real credential to headers already stripped of the client's. */
  authenticate(headers: HeaderMap): void;
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

function parseBaseUrl(kind: ProviderKind, raw: string): { origin: string; pathPrefix: string } {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new TypeError(`providers.${kind}.baseUrl is not a valid URL`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new TypeError(`providers.${kind}.baseUrl must be http(s), got ${url.protocol}`);
  }
  if (url.username || url.password || url.search) {
    throw new TypeError(`providers.${kind}.baseUrl must not carry credentials or a query`);
  }
  return { origin: url.origin, pathPrefix: url.pathname.replace(/\/+$/, '') };
}

export function resolveUpstreams(config: ProvidersConfig): Record<ProviderKind, Upstream> {
  const anthropic = config.anthropic ?? {};
  const openai = config.openai ?? {};
  return {
    anthropic: {
      kind: 'anthropic',
      ...parseBaseUrl('anthropic', anthropic.baseUrl ?? DEFAULT_BASE_URLS.anthropic),
      authenticate(headers) {
        if (anthropic.apiKey) {
          headers['x-api-key'] = anthropic.apiKey;
        } else if (anthropic.oauthToken) {
          headers.authorization = `Bearer ${anthropic.oauthToken}`;
          headers['anthropic-beta'] = mergeBeta(headers['anthropic-beta'], OAUTH_BETA);
        } else {
          throw new GatewayError('provider_not_configured', 'the gateway has no Anthropic credential configured');
        }
      },
    },
    openai: {
      kind: 'openai',
      ...parseBaseUrl('openai', openai.baseUrl ?? DEFAULT_BASE_URLS.openai),
      authenticate(headers) {
        if (!openai.apiKey) {
          throw new GatewayError('provider_not_configured', 'the gateway has no OpenAI credential configured');
        }
        headers.authorization = `Bearer ${openai.apiKey}`;
      },
    },
  };
}
