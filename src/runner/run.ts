// `gateway run`: mint a key, launch one container with it, stream its output, revoke when it exits
// (also on Ctrl-C), and exit with the container's status. In TCP mode the container gets a network
// of its own first (runner/network.ts), removed after it.
import { spawn } from 'node:child_process';
import { callControl } from '../control/socket.ts';
import type { MintRequest } from '../gateway.ts';
import type { KeyInfo } from '../keys/store.ts';
import { contribute, type ContributeRequest, type KeyMinter } from './contribute.ts';
import { createKeyNetwork, type KeyNetwork } from './network.ts';
import { render, type LaunchSpec, type Runtime } from './render.ts';

/** The running daemon's keys, through its control socket. */
export function daemonMinter(stateDir: string): KeyMinter {
  return {
    mint: (request: MintRequest) => callControl<KeyInfo>(stateDir, 'POST', '/v1/keys', request),
    revoke: (id: string) =>
      callControl(stateDir, 'DELETE', `/v1/keys/${encodeURIComponent(id)}`).then(
        () => true,
        () => false,
      ),
  };
}

export interface RunOptions {
  runtime: Runtime;
  request: ContributeRequest;
  launch: LaunchSpec;
  minter: KeyMinter;
  /**
   * `socket` (default): the key's directory mounted, no network. `tcp`: an internal network of its
   * own (podman, docker; root), unless `request.tcp` names a network the host manages already.
   */
  transport?: 'socket' | 'tcp';
  /** Told the key and argv before launch (for a status line on stderr). */
  onLaunch?(key: KeyInfo, argv: string[]): void;
}

const SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
const SIGNAL_NUMBERS: Partial<Record<NodeJS.Signals, number>> = { SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15 };

/** Runs the container to its end; resolves with its exit status (128 + n when killed by signal n). */
export async function runContainer(options: RunOptions): Promise<number> {
  const network = options.transport === 'tcp' && !options.request.tcp ? await tcpNetwork(options.runtime) : undefined;
  try {
    return await runOn(network, options);
  } finally {
    await network?.close();
  }
}

function tcpNetwork(runtime: Runtime): Promise<KeyNetwork> {
  if (runtime !== 'podman' && runtime !== 'docker') throw new TypeError(`TCP mode needs podman or docker (a network of the container's own), not ${runtime}`);
  return createKeyNetwork(runtime);
}

async function runOn(network: KeyNetwork | undefined, options: RunOptions): Promise<number> {
  const tcp = network ? { host: network.hostAddress, allowFrom: [network.containerAddress], network: network.name } : options.request.tcp;
  const contribution = await contribute(options.minter, { ...options.request, ...(tcp && { tcp }) });
  try {
    await network?.guard(contribution.key.tcp!.port);
    // The one address the key accepts connections from.
    const launch = network ? { ...options.launch, extraArgs: ['--ip', network.containerAddress, ...(options.launch.extraArgs ?? [])] } : options.launch;
    const argv = render(options.runtime, contribution, launch);
    options.onLaunch?.(contribution.key, argv);
    const child = spawn(argv[0]!, argv.slice(1), { stdio: 'inherit' });
    // The runtime forwards signals into the container; we stay up to revoke the key after it.
    const forward = (signal: NodeJS.Signals) => child.kill(signal);
    for (const signal of SIGNALS) process.on(signal, forward);
    try {
      return await new Promise<number>((resolve, reject) => {
        child.once('error', reject);
        child.once('exit', (code, signal) => resolve(code ?? 128 + (SIGNAL_NUMBERS[signal!] ?? 0)));
      });
    } finally {
      for (const signal of SIGNALS) process.off(signal, forward);
    }
  } finally {
    await contribution.close();
  }
}
