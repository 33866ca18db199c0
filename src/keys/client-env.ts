// The environment a container's clients need to reach the gateway, and nothing else: base URLs on
// the shim's loopback port, placeholder credentials the clients insist on (they are worthless: the
// socket is the identity), and the switches that stop each client from calling anything but its API
// (see docs/clients.md). In TCP mode (docs/deploy.md) the base URLs name the key's TCP listener and
// the credential is the key's token, which every client sends unchanged as its API key.
import net from 'node:net';

/** The shim's default port inside the container. */
export const SHIM_PORT = 9460;

/** Where a container sees its key's directory. */
export const MOUNT_TARGET = '/run/gateway';

/**
 * Deliberately unlike a real key: Claude Code sends `sk-ant-...` keys to api.anthropic.com itself for
 * bootstrap calls, whatever its base URL.
 */
export const PLACEHOLDER_CREDENTIAL = 'gateway-placeholder-no-secret';

/** Which of Claude Code's gateway formats a container's Claude Code speaks (docs/bedrock-vertex.md). */
export type ClaudeVia = 'anthropic' | 'bedrock' | 'vertex' | 'foundry';

export const CLAUDE_VIAS: readonly ClaudeVia[] = ['anthropic', 'bedrock', 'vertex', 'foundry'];

/** The gateway as a container's clients reach it. */
export interface ContainerAddress {
  /** The base URL: the shim on the container's loopback, or the key's TCP listener. */
  base: string;
  /** What clients send as their API key: a placeholder through the shim, the key's token over TCP. */
  credential: string;
  /** The forward proxy's URL (over TCP with the token as its password, which proxy clients send preemptively). */
  proxy: string;
  /** Hosts the clients reach without the proxy (NO_PROXY). */
  direct: string;
  /** Whether the credential is the key's token (TCP mode): then every client mode must send it. */
  token: boolean;
}

const LOOPBACK = '127.0.0.1,localhost,::1';

/** Through the shim on the container's loopback (socket mode). */
export function shimAddress(port = SHIM_PORT): ContainerAddress {
  const base = `http://127.0.0.1:${port}`;
  return { base, credential: PLACEHOLDER_CREDENTIAL, proxy: base, direct: LOOPBACK, token: false };
}

/** Straight to the key's TCP listener, as the container reaches it (`host` may differ from where the gateway listens). */
export function tcpAddress(host: string, port: number, token: string): ContainerAddress {
  const authority = `${net.isIPv6(host) ? `[${host}]` : host}:${port}`;
  return {
    base: `http://${authority}`,
    credential: token,
    proxy: `http://gateway:${encodeURIComponent(token)}@${authority}`,
    direct: `${host},${LOOPBACK}`,
    token: true,
  };
}

/** A shim port (socket mode, the form these helpers took before TCP mode) or an address, as an address. */
export function addressOf(at: number | ContainerAddress): ContainerAddress {
  return typeof at === 'number' ? shimAddress(at) : at;
}

/**
 * Claude Code's cloud mode on the shim, signing nothing (the gateway signs on the host). Region
 * and project are placeholders, not secrets: the upstream's own come from the gateway's config.
 * The region still picks the inference profile Claude Code names its models with (`us.`). Over
 * TCP each mode sends the token (observed with Claude Code 2.1): Bedrock's bearer token as
 * `Authorization: Bearer`, Foundry's API key as `x-api-key`, and in Vertex mode, which has no key
 * of its own, a custom header.
 */
function claudeModeEnv({ base, credential, token }: ContainerAddress, via: ClaudeVia): Record<string, string> {
  switch (via) {
    case 'bedrock':
      return {
        CLAUDE_CODE_USE_BEDROCK: '1',
        ANTHROPIC_BEDROCK_BASE_URL: base,
        AWS_REGION: 'us-east-1',
        ...(token ? { AWS_BEARER_TOKEN_BEDROCK: credential } : { CLAUDE_CODE_SKIP_BEDROCK_AUTH: '1' }),
      };
    case 'vertex':
      return {
        CLAUDE_CODE_USE_VERTEX: '1',
        ANTHROPIC_VERTEX_BASE_URL: `${base}/v1`,
        CLAUDE_CODE_SKIP_VERTEX_AUTH: '1',
        CLOUD_ML_REGION: 'us-east5',
        ANTHROPIC_VERTEX_PROJECT_ID: 'gateway-placeholder',
        ...(token ? { ANTHROPIC_CUSTOM_HEADERS: `x-api-key: ${credential}` } : {}),
      };
    case 'foundry':
      return {
        CLAUDE_CODE_USE_FOUNDRY: '1',
        ANTHROPIC_FOUNDRY_BASE_URL: base,
        ...(token ? { ANTHROPIC_FOUNDRY_API_KEY: credential } : { CLAUDE_CODE_SKIP_FOUNDRY_AUTH: '1' }),
      };
    default:
      return {};
  }
}

/** The clients' env for the shim's port (socket mode) or a ContainerAddress (either mode). */
export function clientEnv(at: number | ContainerAddress = SHIM_PORT, claudeVia: ClaudeVia = 'anthropic'): Record<string, string> {
  const address = addressOf(at);
  const { base, credential } = address;
  return {
    ...claudeModeEnv(address, claudeVia),
    ANTHROPIC_BASE_URL: base,
    ANTHROPIC_API_KEY: credential,
    OPENAI_BASE_URL: `${base}/v1`,
    OPENAI_API_KEY: credential,
    // Claude Code: no telemetry, bootstrap or update calls; the only requests are /v1/messages.
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1',
    // @openai/agents: its trace exporter ignores the base URL and would post to api.openai.com.
    OPENAI_AGENTS_DISABLE_TRACING: '1',
    ...(address.token ? {} : { GATEWAY_SHIM_PORT: new URL(base).port }),
  };
}

/**
 * For a key with egress: every common tool's proxy variables (both cases: curl reads only the
 * lower-case http_proxy, Go and Python either) on the shim, which relays them to the key's socket,
 * or on the key's TCP listener; NO_PROXY keeps the API calls direct. Not NODE_USE_ENV_PROXY, which would make Node's
 * own fetch honour them but makes every Node process (the shim's included) print an "experimental"
 * warning on Node 22: docs/egress.md says how an image opts in.
 */
export function egressEnv(at: number | ContainerAddress = SHIM_PORT): Record<string, string> {
  const { proxy, direct } = addressOf(at);
  return {
    HTTPS_PROXY: proxy,
    https_proxy: proxy,
    HTTP_PROXY: proxy,
    http_proxy: proxy,
    NO_PROXY: direct,
    no_proxy: direct,
  };
}
