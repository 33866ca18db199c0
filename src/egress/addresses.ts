// Which addresses an egress connection may reach: the half of the SSRF defence that looks at an IP
// address, after the resolver (resolve.ts) turned a host name into addresses and before the tunnel
// connects to exactly the address checked. An address is 'public' only when it is an ordinary internet
// address; anything else (this machine, a private network, cloud metadata, multicast, ranges never
// routed) names the reason, and the policy refuses it unless a rule names it explicitly.
//
// Decisions worth knowing:
// - Documentation ranges (192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32, 3fff::/20) are
//   'reserved': they are never legitimate destinations, and seeing one means a test or an attack.
// - IPv6 forms that carry an IPv4 address (::ffff:a.b.c.d mapped, ::ffff:0:a.b.c.d translated,
//   ::a.b.c.d compatible, 64:ff9b::/96 NAT64, 2002::/16 6to4) are classified by that IPv4 address, so
//   ::ffff:127.0.0.1 is loopback and 64:ff9b::a9fe:a9fe is cloud metadata.
// - IPv6 outside 2000::/3 (global unicast) is 'reserved' unless a more specific class applies: nothing
//   else is allocated, so an unknown range is refused rather than trusted. Teredo (2001::/32) is
//   'reserved' too: its embedded client address is obfuscated and no destination needs it.
// - Order: unspecified and loopback first, then this machine's own interface addresses ('host', even
//   when they sit in a private or reserved range: "this machine" is the more useful refusal), then
//   the other ranges. Anything that is not an IP literal is 'reserved' (fail closed).
import net from 'node:net';
import os from 'node:os';

/** Why an address is not public; 'public' when it is an ordinary internet address. */
export type AddressClass = 'public' | 'loopback' | 'private' | 'link_local' | 'cgnat' | 'multicast' | 'unspecified' | 'reserved' | 'host';

type Family = 'ipv4' | 'ipv6';

/** Ranges checked before this machine's own addresses. */
const FIRST: ReadonlyArray<readonly [AddressClass, string, number, Family]> = [
  ['unspecified', '0.0.0.0', 8, 'ipv4'], // "this network"; Linux connects 0.0.0.0 to the local host
  ['loopback', '127.0.0.0', 8, 'ipv4'],
  ['unspecified', '::', 128, 'ipv6'],
  ['loopback', '::1', 128, 'ipv6'],
];

/** The other non-public ranges; none overlaps another, so their order does not matter. */
const RANGES: ReadonlyArray<readonly [AddressClass, string, number, Family]> = [
  ['private', '10.0.0.0', 8, 'ipv4'],
  ['private', '172.16.0.0', 12, 'ipv4'],
  ['private', '192.168.0.0', 16, 'ipv4'],
  ['link_local', '169.254.0.0', 16, 'ipv4'], // cloud metadata 169.254.169.254
  ['cgnat', '100.64.0.0', 10, 'ipv4'],
  ['multicast', '224.0.0.0', 4, 'ipv4'],
  ['reserved', '240.0.0.0', 4, 'ipv4'], // includes broadcast 255.255.255.255
  ['reserved', '192.0.0.0', 24, 'ipv4'], // IETF protocol assignments (DS-Lite, NAT64 discovery)
  ['reserved', '192.0.2.0', 24, 'ipv4'], // documentation TEST-NET-1
  ['reserved', '198.51.100.0', 24, 'ipv4'], // documentation TEST-NET-2
  ['reserved', '203.0.113.0', 24, 'ipv4'], // documentation TEST-NET-3
  ['reserved', '198.18.0.0', 15, 'ipv4'], // benchmarking
  ['reserved', '192.88.99.0', 24, 'ipv4'], // deprecated 6to4 relay anycast
  ['link_local', 'fe80::', 10, 'ipv6'],
  ['private', 'fc00::', 7, 'ipv6'], // unique local; AWS metadata fd00:ec2::254
  ['private', 'fec0::', 10, 'ipv6'], // deprecated site-local
  ['private', '64:ff9b:1::', 48, 'ipv6'], // local-use NAT64 (its IPv4 position depends on the prefix)
  ['multicast', 'ff00::', 8, 'ipv6'],
  ['reserved', '2001::', 32, 'ipv6'], // Teredo
  ['reserved', '2001:2::', 48, 'ipv6'], // benchmarking
  ['reserved', '2001:db8::', 32, 'ipv6'], // documentation
  ['reserved', '3fff::', 20, 'ipv6'], // documentation (RFC 9637)
];

function blockLists(ranges: typeof RANGES): ReadonlyArray<readonly [AddressClass, net.BlockList]> {
  const lists = new Map<AddressClass, net.BlockList>();
  for (const [kind, network, prefix, family] of ranges) {
    const list = lists.get(kind) ?? new net.BlockList();
    list.addSubnet(network, prefix, family);
    lists.set(kind, list);
  }
  return [...lists];
}

const FIRST_LISTS = blockLists(FIRST);
const RANGE_LISTS = blockLists(RANGES);
const GLOBAL_UNICAST_V6 = new net.BlockList();
GLOBAL_UNICAST_V6.addSubnet('2000::', 3, 'ipv6');

/** How long this machine's interface addresses are trusted before os.networkInterfaces() is read again. */
const HOST_ADDRESSES_TTL_MS = 5_000;
let hostAddresses: { list: net.BlockList; readAt: number } | undefined;

/** This machine's interface addresses, re-read at most every HOST_ADDRESSES_TTL_MS (interfaces change rarely; calls are per connection). */
function ownAddresses(): net.BlockList {
  const now = Date.now();
  // A clock stepped backwards (now < readAt) counts as expired rather than freezing the list.
  if (hostAddresses && now >= hostAddresses.readAt && now - hostAddresses.readAt < HOST_ADDRESSES_TTL_MS) return hostAddresses.list;
  try {
    const list = new net.BlockList();
    for (const entries of Object.values(os.networkInterfaces())) {
      for (const entry of entries ?? []) list.addAddress(entry.address, entry.family === 'IPv4' ? 'ipv4' : 'ipv6');
    }
    hostAddresses = { list, readAt: now };
  } catch {
    // Reading the interfaces failed (rare, libuv): keep the last list and try again on the next call.
    if (!hostAddresses) return new net.BlockList();
  }
  return hostAddresses!.list;
}

/** Classifies an IP literal (v4 or v6, without brackets). IPv4-mapped/compatible IPv6 (::ffff:a.b.c.d), NAT64 (64:ff9b::/96) and 6to4 (2002::/16) are classified by the IPv4 address they embed. 'host' = one of this machine's own interface addresses. */
export function classifyAddress(address: string): AddressClass {
  // A zone (fe80::1%eth0) does not change the address's class.
  const bare = address.includes('%') ? address.slice(0, address.indexOf('%')) : address;
  const version = net.isIP(bare);
  if (version === 4) return classifyV4(bare);
  if (version !== 6) return 'reserved';
  const bytes = ipv6Bytes(bare);
  if (!bytes) return 'reserved';
  const embedded = embeddedIPv4(bytes);
  if (embedded !== undefined) return classifyV4(embedded);
  return classifyIn(bare, 'ipv6') ?? (GLOBAL_UNICAST_V6.check(bare, 'ipv6') ? 'public' : 'reserved');
}

function classifyV4(address: string): AddressClass {
  return classifyIn(address, 'ipv4') ?? 'public';
}

function classifyIn(address: string, family: Family): AddressClass | undefined {
  for (const [kind, list] of FIRST_LISTS) if (list.check(address, family)) return kind;
  if (ownAddresses().check(address, family)) return 'host';
  for (const [kind, list] of RANGE_LISTS) if (list.check(address, family)) return kind;
  return undefined;
}

/** The IPv4 address an IPv6 address carries (mapped, translated, compatible, NAT64, 6to4), if any. */
function embeddedIPv4(b: Uint8Array): string | undefined {
  const zero = (from: number, to: number) => b.subarray(from, to).every((byte) => byte === 0);
  const v4 = (at: number) => `${b[at]}.${b[at + 1]}.${b[at + 2]}.${b[at + 3]}`;
  if (zero(0, 10) && b[10] === 0xff && b[11] === 0xff) return v4(12); // ::ffff:a.b.c.d mapped
  if (zero(0, 8) && b[8] === 0xff && b[9] === 0xff && zero(10, 12)) return v4(12); // ::ffff:0:a.b.c.d translated (SIIT)
  // ::a.b.c.d compatible (deprecated); :: and ::1 are not IPv4 (0.0.0.0/8 would call ::1 unspecified).
  if (zero(0, 12)) return zero(12, 15) && b[15]! <= 1 ? undefined : v4(12);
  if (b[0] === 0x00 && b[1] === 0x64 && b[2] === 0xff && b[3] === 0x9b && zero(4, 12)) return v4(12); // 64:ff9b::/96 NAT64
  if (b[0] === 0x20 && b[1] === 0x02) return v4(2); // 2002:AABB:CCDD::/48 6to4
  return undefined;
}

/** The 16 bytes of an IPv6 literal that net.isIPv6 accepted (no zone), or undefined if it cannot be read. */
function ipv6Bytes(address: string): Uint8Array | undefined {
  let text = address;
  const tail: number[] = [];
  const lastColon = text.lastIndexOf(':');
  if (text.includes('.', lastColon)) {
    // A trailing dotted IPv4 part stands for the last two groups.
    const octets = text
      .slice(lastColon + 1)
      .split('.')
      .map(Number);
    tail.push(((octets[0]! << 8) | octets[1]!) >>> 0, ((octets[2]! << 8) | octets[3]!) >>> 0);
    text = `${text.slice(0, lastColon + 1)}0`; // placeholder group, removed below
  }
  const [head, rest] = text.split('::') as [string, string | undefined];
  const groups = (part: string) => (part === '' ? [] : part.split(':').map((group) => Number.parseInt(group, 16)));
  let values = groups(head);
  if (rest !== undefined) {
    const after = groups(rest);
    if (tail.length) after.pop();
    values = [...values, ...new Array<number>(8 - values.length - after.length - tail.length).fill(0), ...after];
  } else if (tail.length) {
    values.pop();
  }
  values.push(...tail);
  if (values.length !== 8 || values.some((v) => !Number.isInteger(v) || v < 0 || v > 0xffff)) return undefined;
  const bytes = new Uint8Array(16);
  values.forEach((v, i) => {
    bytes[2 * i] = v >> 8;
    bytes[2 * i + 1] = v & 0xff;
  });
  return bytes;
}
