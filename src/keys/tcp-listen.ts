// Where a key in TCP mode listens, and who may connect (docs/deploy.md). An address is an IP
// literal, never a name (a name could resolve anywhere); the wildcard address only with a source
// list, so a key's listener never faces every network the host is on by accident.
import net from 'node:net';
import { ValidationError } from '../util/validation.ts';

export interface TcpListen {
  /** The IP address to listen on: the host side of the container's network. */
  host: string;
  /** Default 0: any free port (the answer says which). */
  port?: number;
  /** Source addresses or CIDRs that may connect, e.g. the container's own address. Default: any that reaches `host`. */
  allowFrom?: string[];
}

/** A key's TCP listener as its owner sees it; `token` only in `mint`'s answer. */
export interface TcpEndpoint {
  host: string;
  port: number;
  allowFrom?: string[];
  token?: string;
}

const MAX_SOURCES = 64;
const FIELD = 'mint `tcp`';

/** `value` as a TcpListen, or a ValidationError naming what is wrong. */
export function checkTcpListen(value: unknown): TcpListen {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new ValidationError(FIELD, 'must be { host, port?, allowFrom? }');
  const { host, port, allowFrom, ...rest } = value as Record<string, unknown>;
  const unknown = Object.keys(rest)[0];
  if (unknown !== undefined) throw new ValidationError(`${FIELD}.${unknown.slice(0, 64)}`, 'is not a field (host, port, allowFrom)');
  if (typeof host !== 'string' || net.isIP(host) === 0)
    throw new ValidationError(`${FIELD}.host`, 'must be an IP address (the container network’s host side), not a name');
  if (port !== undefined && !(Number.isInteger(port) && (port as number) >= 0 && (port as number) <= 65535)) {
    throw new ValidationError(`${FIELD}.port`, 'must be an integer from 0 (any free port) to 65535');
  }
  if (allowFrom !== undefined) {
    if (!Array.isArray(allowFrom) || allowFrom.length === 0 || allowFrom.length > MAX_SOURCES) {
      throw new ValidationError(`${FIELD}.allowFrom`, `must be 1 to ${MAX_SOURCES} addresses or CIDRs`);
    }
    sourceFilter(allowFrom as unknown[]);
  }
  if (isWildcard(host) && allowFrom === undefined) {
    throw new ValidationError(`${FIELD}.host`, `${host} listens on every network of the host: give allowFrom, or the container network's own address`);
  }
  return { host, ...(port === undefined ? {} : { port: port as number }), ...(allowFrom === undefined ? {} : { allowFrom: allowFrom as string[] }) };
}

function isWildcard(host: string): boolean {
  return host === '0.0.0.0' || (net.isIPv6(host) && /^[0:]+$/.test(host));
}

/** A remote address as the source list compares it (`::ffff:10.0.0.2` is 10.0.0.2). */
function plainAddress(address: string): string {
  const mapped = address.toLowerCase().startsWith('::ffff:') ? address.slice(7) : undefined;
  return mapped && net.isIPv4(mapped) ? mapped : address;
}

/** Whether a connection from `address` may go on; throws a ValidationError for an entry that is no address or CIDR. */
export function sourceFilter(allowFrom: readonly unknown[]): (address: string | undefined) => boolean {
  const list = new net.BlockList();
  for (const entry of allowFrom) {
    const [address, prefix, extra] = typeof entry === 'string' ? entry.split('/') : [];
    const family = address === undefined ? 0 : net.isIP(address);
    const bits = prefix === undefined ? undefined : Number(prefix);
    const max = family === 6 ? 128 : 32;
    if (family === 0 || extra !== undefined || (bits !== undefined && !(/^\d{1,3}$/.test(prefix!) && bits <= max))) {
      throw new ValidationError(`${FIELD}.allowFrom`, `${JSON.stringify(String(entry).slice(0, 64))} is not an IP address or CIDR`);
    }
    const type = family === 6 ? 'ipv6' : 'ipv4';
    if (bits === undefined) list.addAddress(address!, type);
    else list.addSubnet(address!, bits, type);
  }
  return (remote) => {
    if (remote === undefined) return false;
    const address = plainAddress(remote);
    return list.check(address, net.isIPv6(address) ? 'ipv6' : 'ipv4');
  };
}
