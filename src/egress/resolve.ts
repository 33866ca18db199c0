// The egress proxy's own name resolution: a CONNECT or absolute-form target host becomes a short list of
// IP addresses here, on the host, so the tunnel can check each address (addresses.ts) and then connect
// to exactly one it checked, with no second lookup in between (no DNS rebinding). The host comes from
// a hostile container: its syntax is checked before any lookup, the lookup is bounded in time, and
// the answer in size.
import dns from 'node:dns';
import net from 'node:net';
import { ValidationError } from '../util/validation.ts';

export interface ResolvedAddress {
  address: string;
  family: 4 | 6;
}

export interface Resolution {
  addresses: ResolvedAddress[];
  source: 'literal' | 'hosts' | 'dns';
}

export interface EgressResolverOptions {
  /** Names pinned to addresses by the operator (like /etc/hosts or --add-host), e.g. { 'registry.internal': ['10.0.0.5'] }. */
  hosts?: Record<string, string[]>;
  /** DNS servers ('1.2.3.4' or '1.2.3.4:5353' or '[::1]:53') to ask instead of resolv.conf's (/etc/hosts is not read: pin names in `hosts`). */
  dnsServers?: string[];
  /** Per lookup. Default 5 s. */
  timeoutMs?: number;
}

export type ResolveErrorCode = 'invalid_host' | 'not_found' | 'timeout' | 'failed';

/** A host that could not be resolved; `code` says why, the message names the host. */
export class ResolveError extends Error {
  override readonly name: string = 'ResolveError';
  readonly code: ResolveErrorCode;
  constructor(code: ResolveErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}

/** At most this many addresses per name: a DNS answer is the remote side's to make as long as it likes. */
export const MAX_ADDRESSES = 16;
const DEFAULT_TIMEOUT_MS = 5_000;
const MAX_TIMEOUT_MS = 60_000;
const MAX_DNS_SERVERS = 8;

const LABEL = /^[a-z0-9_-]{1,63}$/i;

/** A DNS name as the proxy accepts it: labels of letters, digits, '-' and '_', 63 bytes each, 253 in all, one optional trailing dot. */
function isDnsName(host: string): boolean {
  const name = host.endsWith('.') ? host.slice(0, -1) : host;
  if (name.length === 0 || name.length > 253) return false;
  const labels = name.split('.');
  if (!labels.every((label) => LABEL.test(label))) return false;
  // A numeric last label is an IPv4 address in another spelling (127.1, 2130706433, 0x7f.1): getaddrinfo
  // would read it as one, URL parsers refuse it, and no real top-level domain is numeric.
  return !/^(?:\d+|0x[0-9a-f]*)$/i.test(labels.at(-1)!);
}

/** 4 or 6 for an IP literal the proxy accepts (no brackets, no zone), 0 otherwise. */
function ipLiteral(host: string): 0 | 4 | 6 {
  if (host.includes('%')) return 0;
  return net.isIP(host) as 0 | 4 | 6;
}

/** A pinned name's key: lowercase, without the trailing dot. */
function pinKey(name: string): string {
  return (name.endsWith('.') ? name.slice(0, -1) : name).toLowerCase();
}

/** A DNS server as dns.setServers takes it: an IP, IP:port or [IPv6]:port. */
function isDnsServer(server: string): boolean {
  const bracketed = /^\[([^\]]+)\](?::(\d{1,5}))?$/.exec(server);
  const plain = /^([0-9.]+)(?::(\d{1,5}))?$/.exec(server);
  const [, address, port] = bracketed ?? plain ?? [undefined, server, undefined];
  if (!address || ipLiteral(address) === 0) return false;
  if (plain && ipLiteral(address) !== 4) return false;
  return port === undefined || (Number(port) >= 1 && Number(port) <= 65_535);
}

/** Throws a ValidationError naming the first field at fault. */
export function validateEgressResolverOptions(options: EgressResolverOptions): void {
  const { hosts, dnsServers, timeoutMs } = options;
  if (hosts !== undefined) {
    if (typeof hosts !== 'object' || hosts === null || Array.isArray(hosts))
      throw new ValidationError('egress.hosts', 'must be a table of host name to addresses');
    for (const [name, addresses] of Object.entries(hosts)) {
      const field = `egress.hosts.${name}`;
      if (!isDnsName(name) || ipLiteral(name) !== 0) throw new ValidationError(field, `must be a host name such as registry.internal, got "${name}"`);
      if (!Array.isArray(addresses) || addresses.length === 0 || addresses.length > MAX_ADDRESSES) {
        throw new ValidationError(field, `must be a list of 1 to ${MAX_ADDRESSES} IP addresses`);
      }
      for (const address of addresses) {
        if (typeof address !== 'string' || ipLiteral(address) === 0)
          throw new ValidationError(field, `must list IP addresses such as 10.0.0.5 or fd00::5, got "${address}"`);
      }
    }
  }
  if (dnsServers !== undefined) {
    if (!Array.isArray(dnsServers) || dnsServers.length === 0 || dnsServers.length > MAX_DNS_SERVERS) {
      throw new ValidationError('egress.dnsServers', `must list 1 to ${MAX_DNS_SERVERS} servers (omit it to use the system resolver)`);
    }
    for (const server of dnsServers) {
      if (typeof server !== 'string' || !isDnsServer(server))
        throw new ValidationError('egress.dnsServers', `must list servers such as 1.1.1.1, 1.1.1.1:53 or [::1]:53, got "${server}"`);
    }
  }
  if (timeoutMs !== undefined && (typeof timeoutMs !== 'number' || !Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > MAX_TIMEOUT_MS)) {
    throw new ValidationError('egress.timeoutMs', `must be a whole number of milliseconds from 1 to ${MAX_TIMEOUT_MS}`);
  }
}

function familyOf(address: string): 4 | 6 {
  return net.isIP(address) === 6 ? 6 : 4;
}

/** Error codes that mean "this name has no such address", from getaddrinfo and c-ares. */
const NOT_FOUND = new Set(['ENOTFOUND', 'ENODATA', 'EAI_NODATA', 'EAI_NONAME', 'NXDOMAIN']);

/** Resolves egress target hosts on the gateway's side; one per gateway, shared by all tunnels. */
const LOOPBACK: readonly ResolvedAddress[] = [
  { address: '127.0.0.1', family: 4 },
  { address: '::1', family: 6 },
];

export class EgressResolver {
  readonly #pins: ReadonlyMap<string, ResolvedAddress[]>;
  readonly #dnsServers: readonly string[] | undefined;
  readonly #timeoutMs: number;

  constructor(options: EgressResolverOptions = {}) {
    validateEgressResolverOptions(options);
    this.#pins = new Map(
      Object.entries(options.hosts ?? {}).map(([name, addresses]) => [pinKey(name), addresses.map((address) => ({ address, family: familyOf(address) }))]),
    );
    this.#dnsServers = options.dnsServers && [...options.dnsServers];
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  }

  /** An IP literal is returned as is (source 'literal'); a pinned name from `hosts`; otherwise DNS (A and AAAA). At most 16 addresses. Throws ResolveError. */
  async resolve(host: string): Promise<Resolution> {
    if (typeof host !== 'string') throw new ResolveError('invalid_host', 'host must be a string');
    const literal = ipLiteral(host);
    if (literal !== 0) return { addresses: [{ address: host, family: literal }], source: 'literal' };
    if (!isDnsName(host)) throw new ResolveError('invalid_host', `not a host name: ${JSON.stringify(host.slice(0, 300))}`);
    const name = pinKey(host);
    const pinned = this.#pins.get(name);
    if (pinned) return { addresses: pinned.map((entry) => ({ ...entry })), source: 'hosts' };
    // RFC 6761: localhost names are loopback, whatever a DNS server would say of them.
    if (name === 'localhost' || name.endsWith('.localhost')) return { addresses: LOOPBACK.map((entry) => ({ ...entry })), source: 'dns' };
    const found = await this.#ask(name, this.#dnsServers);
    const unique = new Map<string, ResolvedAddress>();
    for (const entry of found) if (unique.size < MAX_ADDRESSES) unique.set(entry.address, entry);
    return { addresses: [...unique.values()], source: 'dns' };
  }

  /**
   * The configured DNS servers, else the system's (resolv.conf), A and AAAA asked together; a family
   * with no records is fine, both empty is not_found. Never getaddrinfo: it runs on libuv's four
   * worker threads and cannot be cancelled, so a container asking for slow names could hold them all
   * and stall the gateway's file writes; c-ares queries are asynchronous and cancelled at the deadline.
   */
  async #ask(name: string, servers: readonly string[] | undefined): Promise<ResolvedAddress[]> {
    // One resolver per lookup, so cancelling it at the deadline cancels this lookup's queries only.
    const resolver = new dns.promises.Resolver({ timeout: Math.max(1, Math.ceil(this.#timeoutMs / 2)), tries: 2 });
    if (servers) resolver.setServers([...servers]);
    const timer = deadline(this.#timeoutMs);
    void timer.expired.then(() => resolver.cancel());
    try {
      const [v4, v6] = await Promise.allSettled([resolver.resolve4(name), resolver.resolve6(name)]);
      const addresses = [
        ...(v4.status === 'fulfilled' ? v4.value.map((address) => ({ address, family: 4 as const })) : []),
        ...(v6.status === 'fulfilled' ? v6.value.map((address) => ({ address, family: 6 as const })) : []),
      ];
      if (addresses.length > 0) return addresses;
      const errors = [v4, v6].map((settled) => (settled.status === 'rejected' ? (settled.reason as NodeJS.ErrnoException) : undefined));
      if (timer.fired()) throw new ResolveError('timeout', `resolving ${name} took longer than ${this.#timeoutMs} ms`);
      // Prefer the informative failure: a timeout or server failure on one family over "no data" on the other.
      const worst = errors.find((error) => error && !NOT_FOUND.has(error.code ?? '')) ?? errors.find((error) => error);
      throw worst ? asResolveError(worst, name) : new ResolveError('not_found', `no addresses for ${name}`);
    } finally {
      timer.clear();
    }
  }
}

const TIMED_OUT: unique symbol = Symbol('timed out');

function deadline(ms: number): { expired: Promise<typeof TIMED_OUT>; fired(): boolean; clear(): void } {
  let timeout: NodeJS.Timeout | undefined;
  let fired = false;
  const expired = new Promise<typeof TIMED_OUT>((resolve) => {
    timeout = setTimeout(() => {
      fired = true;
      resolve(TIMED_OUT);
    }, ms);
  });
  return { expired, fired: () => fired, clear: () => clearTimeout(timeout) };
}

function asResolveError(error: unknown, name: string): ResolveError {
  if (error instanceof ResolveError) return error;
  const code = (error as NodeJS.ErrnoException | undefined)?.code ?? '';
  if (NOT_FOUND.has(code)) return new ResolveError('not_found', `no addresses for ${name}`);
  if (code === 'ETIMEOUT' || code === 'ECANCELLED') return new ResolveError('timeout', `resolving ${name} timed out`);
  return new ResolveError('failed', `resolving ${name} failed: ${code || String(error)}`);
}
