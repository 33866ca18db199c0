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
  /** The network's name; its firewall table is the same with `_` for `-` (`llmgw_...`). */
  name: string;
  /** The bridge on the host (podman picks `podmanN`). */
  bridge: string;
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
  const name = `llmgw-${suffix()}`;
  const table = name.replace('-', '_');
  // docker names the bridge as told (at most 15 bytes: `llmgw-` and 8 characters); podman before
  // 4.7 has no --interface-name and picks its own (podmanN), which `network inspect` tells.
  const options = runtime === 'podman' ? ['--disable-dns'] : ['-o', `com.docker.network.bridge.name=${name}`];
  const create = (extra: string[]) => run(runtime, ['network', 'create', '--internal', ...options, ...extra, name]);
  await create([]);
  let bridge: string | undefined;
  let guarded = false;
  const close = async () => {
    if (guarded) await run('nft', ['delete', 'table', 'inet', table]).catch(() => undefined);
    // podman's netavark removes the bridge with its last container; one no container joined is ours
    // to remove, before the network goes (after it, podman may give the name to another network).
    if (bridge) await run('ip', ['link', 'delete', bridge]).catch(() => undefined);
    await run(runtime, ['network', 'rm', '-f', name]).catch(() => undefined);
  };
  try {
    let addresses = await addressing(runtime, name);
    if (!addresses.gateway) {
      // podman (4.3) gives an internal network no gateway, so netavark would re-create the bridge
      // without the host address for each container after the first: the same subnet, with one.
      await run(runtime, ['network', 'rm', '-f', name]);
      await create(['--subnet', addresses.subnet, '--gateway', hostAt(addresses.subnet, 1)]);
      addresses = await addressing(runtime, name);
    }
    const { subnet, gateway } = addresses;
    if (!gateway) throw new Error(`${runtime} network ${name} has no IPv4 gateway`);
    bridge = addresses.bridge;
    // netavark creates the bridge only when a container joins, too late to listen on it: create
    // it now as netavark would (it adopts an existing bridge and its address).
    if (runtime === 'podman') await ensureBridge(bridge, gateway, subnet);
    const containerAddress = firstHost(subnet, gateway);
    const dev = bridge;
    return {
      name,
      bridge: dev,
      hostAddress: gateway,
      containerAddress,
      async guard(port) {
        await nft(rules(table, dev, { hostAddress: gateway, containerAddress, port }));
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

async function addressing(runtime: Runtime, name: string): Promise<{ subnet: string; gateway?: string; bridge: string }> {
  const { stdout } = await run(runtime, ['network', 'inspect', name]);
  const [network] = JSON.parse(stdout) as Array<Record<string, unknown>>;
  // podman: `subnets: [{ subnet, gateway }]`, `network_interface`; docker: `IPAM.Config: [{ Subnet, Gateway }]`.
  const podman = (network?.subnets as Array<{ subnet: string; gateway?: string }> | undefined)?.find((s) => s.subnet.includes('.'));
  const docker = (network?.IPAM as { Config?: Array<{ Subnet: string; Gateway?: string }> } | undefined)?.Config?.find((c) => c.Subnet.includes('.'));
  const subnet = podman?.subnet ?? docker?.Subnet;
  const bridge = runtime === 'podman' ? (network?.network_interface as string | undefined) : name;
  if (!subnet || !bridge) throw new Error(`${runtime} network ${name} has no IPv4 subnet or no bridge`);
  return { subnet, gateway: podman?.gateway ?? docker?.Gateway, bridge };
}

async function ensureBridge(name: string, gateway: string, subnet: string): Promise<void> {
  const prefix = subnet.split('/')[1];
  await run('ip', ['link', 'add', name, 'type', 'bridge']);
  await run('ip', ['addr', 'add', `${gateway}/${prefix}`, 'dev', name]);
  await run('ip', ['link', 'set', name, 'up']);
}

/** The address `offset` past the subnet's base. */
function hostAt(subnet: string, offset: number): string {
  const [base] = subnet.split('/');
  const value = base!.split('.').reduce((sum, octet) => sum * 256 + Number(octet), 0);
  return [24, 16, 8, 0].map((shift) => Math.floor((value + offset) / 2 ** shift) % 256).join('.');
}

/** The subnet's first host address that is not the gateway's. */
export function firstHost(subnet: string, gateway: string): string {
  return hostAt(subnet, 1) === gateway ? hostAt(subnet, 2) : hostAt(subnet, 1);
}
