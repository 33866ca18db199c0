// A network of its own for one TCP-mode container (docs/deploy.md), with podman or docker on Linux:
// an internal bridge (no route out, no DNS) whose host side the key's listener binds to, and an
// nftables table that lets the container reach that listener and nothing else of the host. Without
// it, anything the host serves on its wildcard address would answer on the bridge address too.
// Needs root (CAP_NET_ADMIN): rootless podman keeps its bridges in a namespace of its own, where no
// host process can listen; use the socket there.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { customAlphabet } from 'nanoid';

const run = promisify(execFile);
const suffix = customAlphabet('0123456789abcdefghijklmnopqrstuvwxyz', 8);

export interface KeyNetwork {
  /** The network's name, and its bridge's on the host. */
  name: string;
  /** The bridge's address: where the key listens. */
  hostAddress: string;
  /** The one address the container gets (`--ip`): the only source the key accepts. */
  containerAddress: string;
  /** Lets the container reach `hostAddress:port` and nothing else of the host. */
  guard(port: number): Promise<void>;
  /** Removes the firewall table and the network (after the container is gone). Never throws. */
  close(): Promise<void>;
}

type Runtime = 'podman' | 'docker';

/** Creates the network; its bridge exists (with the host address) when this resolves, so the key can listen on it. */
export async function createKeyNetwork(runtime: Runtime): Promise<KeyNetwork> {
  // Interface names are at most 15 bytes: `llmgw-` and 8 characters.
  const name = `llmgw-${suffix()}`;
  const table = name.replace('-', '_');
  const bridgeOption = runtime === 'podman' ? ['--interface-name', name] : ['-o', `com.docker.network.bridge.name=${name}`];
  const dnsOption = runtime === 'podman' ? ['--disable-dns'] : [];
  await run(runtime, ['network', 'create', '--internal', ...dnsOption, ...bridgeOption, name]);
  let guarded = false;
  const close = async () => {
    if (guarded) await run('nft', ['delete', 'table', 'inet', table]).catch(() => undefined);
    await run(runtime, ['network', 'rm', '-f', name]).catch(() => undefined);
    // podman's netavark removes the bridge with its last container; one that never started is ours to remove.
    await run('ip', ['link', 'delete', name]).catch(() => undefined);
  };
  try {
    const { subnet, gateway } = await addressing(runtime, name);
    // netavark creates the bridge only when a container joins, too late to listen on it: create
    // it now as netavark would (it adopts an existing bridge and its address).
    if (runtime === 'podman') await ensureBridge(name, gateway, subnet);
    const containerAddress = firstHost(subnet, gateway);
    return {
      name,
      hostAddress: gateway,
      containerAddress,
      async guard(port) {
        await nft(rules(table, name, { hostAddress: gateway, containerAddress, port }));
        guarded = true;
      },
      close,
    };
  } catch (error) {
    await close();
    throw error;
  }
}

/** The nftables table: from the bridge, only the container's connections to the listener reach the host; nothing is forwarded. */
export function rules(table: string, bridge: string, to: { hostAddress: string; containerAddress: string; port: number }): string {
  return `table inet ${table} {
  chain input {
    type filter hook input priority filter - 1; policy accept;
    iifname "${bridge}" ip saddr ${to.containerAddress} ip daddr ${to.hostAddress} tcp dport ${to.port} accept
    iifname "${bridge}" drop
  }
  chain forward {
    type filter hook forward priority filter - 1; policy accept;
    iifname "${bridge}" drop
    oifname "${bridge}" drop
  }
}
`;
}

function nft(ruleset: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = execFile('nft', ['-f', '-'], (error) => (error ? reject(error) : resolve()));
    child.stdin?.end(ruleset);
  });
}

async function addressing(runtime: Runtime, name: string): Promise<{ subnet: string; gateway: string }> {
  const { stdout } = await run(runtime, ['network', 'inspect', name]);
  const [network] = JSON.parse(stdout) as Array<Record<string, unknown>>;
  // podman: `subnets: [{ subnet, gateway }]`; docker: `IPAM.Config: [{ Subnet, Gateway }]`.
  const podman = (network?.subnets as Array<{ subnet: string; gateway: string }> | undefined)?.[0];
  const docker = (network?.IPAM as { Config?: Array<{ Subnet: string; Gateway: string }> } | undefined)?.Config?.[0];
  const subnet = podman?.subnet ?? docker?.Subnet;
  const gateway = podman?.gateway ?? docker?.Gateway;
  if (!subnet || !gateway) throw new Error(`${runtime} network ${name} has no IPv4 subnet and gateway`);
  return { subnet, gateway };
}

async function ensureBridge(name: string, gateway: string, subnet: string): Promise<void> {
  const prefix = subnet.split('/')[1];
  await run('ip', ['link', 'add', name, 'type', 'bridge']);
  await run('ip', ['addr', 'add', `${gateway}/${prefix}`, 'dev', name]);
  await run('ip', ['link', 'set', name, 'up']);
}

/** The subnet's first host address that is not the gateway's. */
export function firstHost(subnet: string, gateway: string): string {
  const [base] = subnet.split('/');
  const value = base!.split('.').reduce((sum, octet) => sum * 256 + Number(octet), 0);
  const candidate = (offset: number) => [24, 16, 8, 0].map((shift) => Math.floor((value + offset) / 2 ** shift) % 256).join('.');
  return candidate(1) === gateway ? candidate(2) : candidate(1);
}
