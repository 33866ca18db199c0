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

export function clientEnv(port = SHIM_PORT): Record<string, string> {
  const base = `http://127.0.0.1:${port}`;
  return {
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
