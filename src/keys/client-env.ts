// The environment a container's clients need to reach the gateway through the shim, and nothing
// else: base URLs on the shim's loopback port, placeholder credentials the clients insist on (they
// are worthless: the socket is the identity), and the switches that stop each client from calling
// anything but its API (see docs/clients.md).

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

/**
 * Claude Code's cloud mode on the shim, signing nothing (the gateway signs on the host). Region
 * and project are placeholders, not secrets: the upstream's own come from the gateway's config.
 * The region still picks the inference profile Claude Code names its models with (`us.`).
 */
function claudeModeEnv(base: string, via: ClaudeVia): Record<string, string> {
  switch (via) {
    case 'bedrock':
      return { CLAUDE_CODE_USE_BEDROCK: '1', ANTHROPIC_BEDROCK_BASE_URL: base, CLAUDE_CODE_SKIP_BEDROCK_AUTH: '1', AWS_REGION: 'us-east-1' };
    case 'vertex':
      return {
        CLAUDE_CODE_USE_VERTEX: '1',
        ANTHROPIC_VERTEX_BASE_URL: `${base}/v1`,
        CLAUDE_CODE_SKIP_VERTEX_AUTH: '1',
        CLOUD_ML_REGION: 'us-east5',
        ANTHROPIC_VERTEX_PROJECT_ID: 'gateway-placeholder',
      };
    case 'foundry':
      return { CLAUDE_CODE_USE_FOUNDRY: '1', ANTHROPIC_FOUNDRY_BASE_URL: base, CLAUDE_CODE_SKIP_FOUNDRY_AUTH: '1' };
    default:
      return {};
  }
}

export function clientEnv(port = SHIM_PORT, claudeVia: ClaudeVia = 'anthropic'): Record<string, string> {
  const base = `http://127.0.0.1:${port}`;
  return {
    ...claudeModeEnv(base, claudeVia),
    ANTHROPIC_BASE_URL: base,
    ANTHROPIC_API_KEY: PLACEHOLDER_CREDENTIAL,
    OPENAI_BASE_URL: `${base}/v1`,
    OPENAI_API_KEY: PLACEHOLDER_CREDENTIAL,
    // Claude Code: no telemetry, bootstrap or update calls; the only requests are /v1/messages.
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1',
    // @openai/agents: its trace exporter ignores the base URL and would post to api.openai.com.
    OPENAI_AGENTS_DISABLE_TRACING: '1',
    GATEWAY_SHIM_PORT: String(port),
  };
}

/**
 * For a key with egress: every common tool's proxy variables (both cases: curl reads only the
 * lower-case http_proxy, Go and Python either) on the shim, which relays them to the key's socket;
 * NO_PROXY keeps the API calls on the shim direct. Not NODE_USE_ENV_PROXY, which would make Node's
 * own fetch honour them but makes every Node process (the shim's included) print an "experimental"
 * warning on Node 22: docs/egress.md says how an image opts in.
 */
export function egressEnv(port = SHIM_PORT): Record<string, string> {
  const proxy = `http://127.0.0.1:${port}`;
  const direct = '127.0.0.1,localhost,::1';
  return {
    HTTPS_PROXY: proxy,
    https_proxy: proxy,
    HTTP_PROXY: proxy,
    http_proxy: proxy,
    NO_PROXY: direct,
    no_proxy: direct,
  };
}
