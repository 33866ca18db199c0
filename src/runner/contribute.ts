// What the gateway contributes to one container launch: a fresh key and the typed data a host needs
// to start the container with it (env, mounts, labels, no network) and to end it (close revokes).
// Hosts pass this to a renderer (podman, docker, bwrap, Apple's container, a Kubernetes Pod) or to
// their own container API. In TCP mode (docs/deploy.md) there is no mount and no shim: the
// container joins a network whose host side the key listens on, and its clients send the token.
import { containerAddress, containerEnv } from '../control/container-env.ts';
import type { MintRequest } from '../gateway.ts';
import { SHIM_NAME, type KeyInfo } from '../keys/store.ts';
import type { TcpListen } from '../keys/tcp-listen.ts';
import { type ClaudeVia, MOUNT_TARGET, SHIM_PORT } from '../keys/client-env.ts';
import { ValidationError } from '../util/validation.ts';

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
  /** TCP mode: where the key listens, the network the container joins, and the listener's address as the container reaches it. */
  tcp?: TcpContribution;
}

export interface TcpContribution extends TcpListen {
  /** The container's network (e.g. an internal one whose host side `host` is on). */
  network: string;
  /** The listener's address as the container reaches it (a name like `host.docker.internal`). Default `host`. */
  reachAs?: string;
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
  /** `none` (socket mode), or in TCP mode the network the container joins. */
  network: string;
  /** The gateway as the container's clients reach it: the shim on loopback, or the key's TCP listener. */
  baseUrl: string;
  /** `CMD...` wrapped so the shim relays while it runs (any image with Node); as is in TCP mode. */
  wrap(command: string[]): string[];
  /** Revokes the key. Call it when the container exits. Idempotent. */
  close(reason?: string): Promise<void>;
}

export async function contribute(minter: KeyMinter, request: ContributeRequest): Promise<Contribution> {
  const { port = SHIM_PORT, githubHost, claudeVia, tcp, ...mint } = request;
  if (tcp && (typeof tcp.network !== 'string' || tcp.network === '' || tcp.network === 'none' || tcp.network === 'host')) {
    throw new ValidationError('tcp.network', 'must name the network the container joins (not none or host)');
  }
  const listen = tcp && { host: tcp.host, port: tcp.port, allowFrom: tcp.allowFrom };
  const key = await minter.mint({ ...mint, shimPort: port, ...(listen && { tcp: listen }) });
  const where = { port, reachAs: tcp?.reachAs };
  let closing: Promise<void> | undefined;
  return {
    key,
    env: containerEnv(key, { ...where, claudeVia, github: Boolean(mint.github), githubHost }),
    mounts: tcp ? [] : [{ source: key.dir, target: MOUNT_TARGET, readOnly: true }],
    labels: {
      'llm-gateway.key': key.id,
      'llm-gateway.group': key.group,
      ...(key.label ? { 'llm-gateway.label': key.label } : {}),
    },
    network: tcp ? tcp.network : 'none',
    baseUrl: containerAddress(key, where).base,
    wrap: tcp ? (command) => command : (command) => ['node', `${MOUNT_TARGET}/${SHIM_NAME}`, '--port', String(port), '--', ...command],
    close() {
      closing ??= minter.revoke(key.id).then(() => undefined);
      return closing;
    },
  };
}
