// The environment a container's clients need to reach the gateway through the shim, and nothing
// else: base URLs on the shim's loopback port, placeholder credentials the clients insist on (they
// are worthless: the socket is the identity), and the switches that stop each client from calling
// anything but its API (see docs/clients.md).

/** The shim's default port inside the container. */
export const SHIM_PORT = 9460;

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
