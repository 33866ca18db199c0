// What the gateway contributes to one container launch: a fresh key and the typed data a host needs
// to start the container with it (env, mounts, labels, no network) and to end it (close revokes).
// Hosts pass this to a renderer (podman, docker, bwrap) or to their own container API.
import type { MintRequest } from '../gateway.ts';
import { SHIM_NAME, type KeyInfo } from '../keys/store.ts';
import { githubEnv } from '../github/env.ts';
import { type ClaudeVia, clientEnv, egressEnv, MOUNT_TARGET, SHIM_PORT } from '../keys/client-env.ts';
import { serviceEnv } from '../services/client.ts';

export { MOUNT_TARGET };

/** Anything that can mint and revoke keys: an embedded Gateway, or the daemon's control client. */
export interface KeyMinter {
  mint(request: MintRequest): Promise<KeyInfo>;
  revoke(id: string): Promise<boolean>;
}

export interface Mount {
  source: string;
  target: string;
  readOnly: boolean;
}

export interface ContributeRequest extends MintRequest {
  /** The shim's port inside the container. Default 9460. */
  port?: number;
  /** The host git URLs name (`https://HOST/...`), as the gateway's `github.host`. Default github.com. */
  githubHost?: string;
  /**
   * Which of Claude Code's gateway formats its env sets up: `anthropic` (default), or its Bedrock,
   * Vertex or Foundry mode on the shim, signing nothing. Any upstream serves any of them.
   */
  claudeVia?: ClaudeVia;
}

export interface Contribution {
  key: KeyInfo;
  /** The clients' environment: base URLs on the shim, worthless placeholders, no side traffic. */
  env: Record<string, string>;
  /**
   * The key's directory, read-only: connecting to a socket needs no write access, and the
   * container cannot create files next to its socket.
   */
  mounts: Mount[];
  labels: Record<string, string>;
  network: 'none';
  /** `CMD...` wrapped so the shim relays while it runs (any image with Node). */
  wrap(command: string[]): string[];
  /** Revokes the key. Call it when the container exits. Idempotent. */
  close(reason?: string): Promise<void>;
}

export async function contribute(minter: KeyMinter, request: ContributeRequest): Promise<Contribution> {
  const { port = SHIM_PORT, githubHost, claudeVia, ...mint } = request;
  const key = await minter.mint({ ...mint, shimPort: port });
  let closing: Promise<void> | undefined;
  return {
    key,
    // With a GitHub scope: git's URL rewrite to the shim and the API base URL (docs/github.md);
    // with egress, the proxy variables (docs/egress.md); with services, their URLs and the MCP config (docs/services.md).
    env: {
      ...clientEnv(port, claudeVia),
      ...(mint.github ? githubEnv(port, githubHost) : {}),
      ...(key.egress ? egressEnv(port) : {}),
      ...serviceEnv(port, key.services ?? []),
    },
    mounts: [{ source: key.dir, target: MOUNT_TARGET, readOnly: true }],
    labels: {
      'llm-gateway.key': key.id,
      'llm-gateway.group': key.group,
      ...(key.label ? { 'llm-gateway.label': key.label } : {}),
    },
    network: 'none',
    wrap: (command) => ['node', `${MOUNT_TARGET}/${SHIM_NAME}`, '--port', String(port), '--', ...command],
    close() {
      closing ??= minter.revoke(key.id).then(() => undefined);
      return closing;
    },
  };
}
