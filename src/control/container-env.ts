// The environment a key's container gets, in one place for the runner's contribution and the control
// API's mint answer: the clients' base URLs and credential (the shim's placeholder, or in TCP mode
// the key's token), and with the key's grants the GitHub, proxy and service variables.
import { githubEnv } from '../github/env.ts';
import { type ClaudeVia, clientEnv, type ContainerAddress, egressEnv, SHIM_PORT, shimAddress, tcpAddress } from '../keys/client-env.ts';
import type { KeyInfo } from '../keys/store.ts';
import { serviceEnv } from '../services/client.ts';

export interface EnvOptions {
  /** The shim's port in the container (socket mode). Default 9460. */
  port?: number;
  /** TCP mode: the listener's address as the container reaches it, when not the address it listens on. */
  reachAs?: string;
  claudeVia?: ClaudeVia;
  /** The key has a GitHub scope: git and API clients go through the gateway, to this host's URLs. */
  github?: boolean;
  githubHost?: string;
}

/** Where the key's container reaches the gateway. A TCP key needs its token: only `mint`'s answer has it. */
export function containerAddress(key: KeyInfo, options: Pick<EnvOptions, 'port' | 'reachAs'> = {}): ContainerAddress {
  if (!key.tcp) return shimAddress(options.port ?? SHIM_PORT);
  if (!key.tcp.token) throw new TypeError(`key ${key.id} is in TCP mode: its container env needs the token from mint's answer`);
  return tcpAddress(options.reachAs ?? key.tcp.host, key.tcp.port, key.tcp.token);
}

export function containerEnv(key: KeyInfo, options: EnvOptions = {}): Record<string, string> {
  const address = containerAddress(key, options);
  return {
    ...clientEnv(address, options.claudeVia),
    // With a GitHub scope: git's URL rewrite and the API base URL (docs/github.md); with egress, the
    // proxy variables (docs/egress.md); with services, their URLs and the MCP config (docs/services.md).
    ...(options.github ? githubEnv(address, options.githubHost) : {}),
    ...(key.egress ? egressEnv(address) : {}),
    ...serviceEnv(address, key.services ?? []),
  };
}
