// A renderer for Apple's `container` CLI (macOS, one lightweight VM per container). The key's
// socket directory cannot be bind-mounted into a VM the way it is into a namespace, so this runtime
// takes a TCP-mode contribution only: the container joins a network of its own and reaches the
// gateway's per-key listener with its token (docs/deploy.md, "Apple's container").
//
// The strongest isolation the CLI offers (checked against apple/container's command reference):
// a dedicated network from `container network create --internal` (vmnet host-only mode: other
// guests on it and the host, no NAT), plus `--no-dns` when the gateway is addressed by IP. What it
// cannot do: there is no per-container firewall and no `--network none` that still leaves a route
// to the host, and host-only mode has been reported to let a guest's TCP reach the internet by IP
// (apple/container#2062, open): the VM may reach beyond the host. The gateway still keeps the real
// key out of it; docs/deploy.md says what that leaves.
import net from 'node:net';
import type { Contribution } from './contribute.ts';
import { checkSpec, command, envPairs, type LaunchSpec, WORKSPACE } from './launch-spec.ts';

const SOCKET_MOUNT = '/run/gateway';
// A network name is one argv value and a vmnet name: no flag, no separator (`--network NAME,mac=...`).
const NETWORK_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

function checkNetwork(network: string): void {
  if (!NETWORK_NAME.test(network)) throw new TypeError(`network ${JSON.stringify(network)} must be [A-Za-z0-9][A-Za-z0-9_.-]*`);
}

/** argv that creates the dedicated network a TCP-mode container joins (macOS 26+); delete it with `container network delete NAME`. */
export function appleNetworkCreate(network: string): string[] {
  checkNetwork(network);
  return ['container', 'network', 'create', '--internal', network];
}

/**
 * argv for `container run --rm ...`; a TypeError for a socket-mode contribution (the key's socket
 * directory mounted at /run/gateway, or `--network=none`) and for values the CLI could misparse.
 */
export function appleContainer(contribution: Contribution, spec: LaunchSpec): string[] {
  if (contribution.network === 'none' || contribution.mounts.some((mount) => mount.target === SOCKET_MOUNT)) {
    throw new TypeError(
      "Apple's container runs each container in its own VM, where the key's Unix socket cannot be mounted: mint the key in TCP mode (gateway run --transport tcp)",
    );
  }
  checkSpec(contribution, spec);
  if (!spec.image) throw new TypeError('container needs an image');
  const argv = ['container', 'run', '--rm', '--network', contribution.network];
  // No resolver in the VM when the gateway is an address: a name lookup would be one more way out.
  if (net.isIP(new URL(contribution.baseUrl).hostname.replace(/^\[|\]$/g, ''))) argv.push('--no-dns');
  if (spec.name) argv.push('--name', spec.name);
  for (const mount of spec.mounts ?? []) argv.push('--volume', `${mount.source}:${mount.target}${mount.readOnly ? ':ro' : ''}`);
  if (spec.workdir) argv.push('--volume', `${spec.workdir}:${WORKSPACE}`, '--workdir', WORKSPACE);
  for (const [name, value] of Object.entries(contribution.labels)) argv.push('--label', `${name}=${value}`);
  for (const [name, value] of envPairs(contribution, spec)) argv.push('--env', `${name}=${value}`);
  if (spec.user) argv.push('--user', spec.user);
  // `--`: whatever the image is called, it is the image, never a flag.
  argv.push(...(spec.extraArgs ?? []), '--', spec.image, ...command(contribution, spec));
  return argv;
}
