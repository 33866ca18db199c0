// The address half of the egress proxy's SSRF defences: every non-public range is classified by name
// (both edges where cheap, and the IPv6 forms that smuggle an IPv4 address), this machine's own
// addresses are 'host', and the resolver turns a host into bounded addresses through a real DNS server
// on loopback: syntax refused before any query, NXDOMAIN, a server that never answers, too many answers.
import assert from 'node:assert/strict';
import os from 'node:os';
import { after, before, describe, mock, test } from 'node:test';
import { type AddressClass, classifyAddress } from '../src/egress/addresses.ts';
import { EgressResolver, MAX_ADDRESSES, ResolveError, validateEgressResolverOptions } from '../src/egress/resolve.ts';
import { ValidationError } from '../src/util/validation.ts';
import { type DnsServer, startDnsServer } from './support/dns-server.ts';

/** Addresses of this machine's interfaces: a table entry that happens to be one of them is 'host' here. */
const OWN = new Set(
  Object.values(os.networkInterfaces())
    .flat()
    .map((entry) => entry!.address),
);

const TABLE: ReadonlyArray<readonly [string, AddressClass]> = [
  // 0.0.0.0/8
  ['0.0.0.0', 'unspecified'],
  ['0.255.255.255', 'unspecified'],
  ['1.0.0.1', 'public'],
  // 127/8
  ['126.255.255.255', 'public'],
  ['127.0.0.0', 'loopback'],
  ['127.0.0.1', 'loopback'],
  ['127.255.255.255', 'loopback'],
  ['128.0.0.0', 'public'],
  // 10/8, 172.16/12, 192.168/16
  ['9.255.255.255', 'public'],
  ['10.0.0.0', 'private'],
  ['10.255.255.255', 'private'],
  ['11.0.0.0', 'public'],
  ['172.15.255.255', 'public'],
  ['172.16.0.0', 'private'],
  ['172.31.255.255', 'private'],
  ['172.32.0.0', 'public'],
  ['192.167.255.255', 'public'],
  ['192.168.0.0', 'private'],
  ['192.168.255.255', 'private'],
  ['192.169.0.0', 'public'],
  // 169.254/16, cloud metadata
  ['169.253.255.255', 'public'],
  ['169.254.0.0', 'link_local'],
  ['169.254.169.254', 'link_local'],
  ['169.254.255.255', 'link_local'],
  ['169.255.0.0', 'public'],
  // 100.64/10 CGNAT
  ['100.63.255.255', 'public'],
  ['100.64.0.0', 'cgnat'],
  ['100.127.255.255', 'cgnat'],
  ['100.128.0.0', 'public'],
  // 224/4 multicast, 240/4 reserved, broadcast
  ['223.255.255.255', 'public'],
  ['224.0.0.0', 'multicast'],
  ['239.255.255.255', 'multicast'],
  ['240.0.0.0', 'reserved'],
  ['255.255.255.254', 'reserved'],
  ['255.255.255.255', 'reserved'],
  // 192.0.0.0/24, benchmarking, documentation (reserved by decision), 6to4 relay anycast
  ['191.255.255.255', 'public'],
  ['192.0.0.0', 'reserved'],
  ['192.0.0.255', 'reserved'],
  ['192.0.1.0', 'public'],
  ['198.17.255.255', 'public'],
  ['198.18.0.0', 'reserved'],
  ['198.19.255.255', 'reserved'],
  ['198.20.0.0', 'public'],
  ['192.0.2.0', 'reserved'],
  ['192.0.2.255', 'reserved'],
  ['198.51.100.0', 'reserved'],
  ['198.51.100.255', 'reserved'],
  ['203.0.113.0', 'reserved'],
  ['203.0.113.255', 'reserved'],
  ['192.88.99.1', 'reserved'],
  ['8.8.8.8', 'public'],
  ['93.184.216.34', 'public'],
  // IPv6
  ['::', 'unspecified'],
  ['0:0:0:0:0:0:0:0', 'unspecified'],
  ['::1', 'loopback'],
  ['0:0:0:0:0:0:0:1', 'loopback'],
  ['fe80::', 'link_local'],
  ['fe80::1%lo', 'link_local'],
  ['FE80::1', 'link_local'],
  ['febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 'link_local'],
  ['fec0::1', 'private'],
  ['fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 'reserved'], // below fc00::/7, outside 2000::/3
  ['fc00::', 'private'],
  ['fd00:ec2::254', 'private'], // AWS metadata over IPv6
  ['fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 'private'],
  ['ff00::', 'multicast'],
  ['ff02::1', 'multicast'],
  ['ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 'multicast'],
  ['2001:db8::', 'reserved'],
  ['2001:db8:ffff:ffff:ffff:ffff:ffff:ffff', 'reserved'],
  ['2001:db9::1', 'public'],
  ['3fff::1', 'reserved'],
  ['2001:0:4136:e378:8000:63bf:3fff:fdd2', 'reserved'], // Teredo
  ['2001:2::1', 'reserved'],
  ['100::1', 'reserved'], // discard-only
  ['1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 'reserved'],
  ['4000::', 'reserved'],
  ['2000::', 'public'],
  ['2001:4860:4860::8888', 'public'],
  ['2606:4700:4700::1111', 'public'],
  // IPv4 inside IPv6: mapped, translated, compatible, NAT64, 6to4
  ['::ffff:127.0.0.1', 'loopback'],
  ['::ffff:7f00:1', 'loopback'],
  ['0:0:0:0:0:ffff:7f00:1', 'loopback'],
  ['::FFFF:169.254.169.254', 'link_local'],
  ['::ffff:a9fe:a9fe', 'link_local'],
  ['::ffff:10.1.2.3', 'private'],
  ['::ffff:100.64.0.1', 'cgnat'],
  ['::ffff:224.0.0.1', 'multicast'],
  ['::ffff:255.255.255.255', 'reserved'],
  ['::ffff:0.0.0.0', 'unspecified'],
  ['::ffff:8.8.8.8', 'public'],
  ['::ffff:0:127.0.0.1', 'loopback'],
  ['::127.0.0.1', 'loopback'],
  ['::10.0.0.1', 'private'],
  ['64:ff9b::7f00:1', 'loopback'],
  ['64:ff9b::169.254.169.254', 'link_local'],
  ['64:ff9b::c0a8:101', 'private'],
  ['64:ff9b::808:808', 'public'],
  ['64:ff9b:1::a00:1', 'private'], // local-use NAT64
  ['2002:7f00:1::1', 'loopback'],
  ['2002:a9fe:a9fe::', 'link_local'],
  ['2002:c0a8:101:1::1', 'private'],
  ['2002:808:808::1', 'public'],
  // Not IP literals: fail closed
  ['', 'reserved'],
  ['localhost', 'reserved'],
  ['[::1]', 'reserved'],
  ['127.1', 'reserved'],
  ['2130706433', 'reserved'],
];

describe('classifyAddress', () => {
  test('every range, at both edges, in every IPv4-in-IPv6 form', () => {
    const wrong: string[] = [];
    for (const [address, expected] of TABLE) {
      const here = OWN.has(address) && expected !== 'loopback' && expected !== 'unspecified' ? 'host' : expected;
      const got = classifyAddress(address);
      if (got !== here) wrong.push(`${address}: ${got}, expected ${here}`);
    }
    assert.deepEqual(wrong, []);
  });

  test("this machine's own non-loopback addresses are 'host', also inside IPv6", (t) => {
    const own = Object.values(os.networkInterfaces())
      .flat()
      .filter((entry) => entry && !entry.internal);
    if (own.length === 0) return t.skip('no non-loopback interface');
    for (const entry of own) {
      assert.equal(classifyAddress(entry!.address), 'host', entry!.address);
      if (entry!.family === 'IPv4') assert.equal(classifyAddress(`::ffff:${entry!.address}`), 'host', `::ffff:${entry!.address}`);
    }
  });

  test('the interface list is read at most once per 5 s, and a new address counts after that', () => {
    mock.timers.enable({ apis: ['Date'], now: 0 });
    const real = os.networkInterfaces;
    const extra: os.NetworkInterfaceInfo = {
      address: '8.8.4.4',
      netmask: '255.255.255.0',
      family: 'IPv4',
      mac: '00:00:00:00:00:00',
      internal: false,
      cidr: '8.8.4.4/24',
    };
    let withExtra = false;
    const read = mock.method(os, 'networkInterfaces', () => (withExtra ? { ...real(), test0: [extra] } : real()));
    try {
      // The clock now reads 0, before the last read: the list is re-read once, then trusted.
      for (let i = 0; i < 1000; i++) classifyAddress('8.8.4.4');
      assert.equal(read.mock.callCount(), 1);
      withExtra = true;
      mock.timers.tick(4_999);
      assert.equal(classifyAddress('8.8.4.4'), 'public');
      assert.equal(read.mock.callCount(), 1);
      mock.timers.tick(1);
      assert.equal(classifyAddress('8.8.4.4'), 'host');
      assert.equal(read.mock.callCount(), 2);
    } finally {
      read.mock.restore();
      mock.timers.reset();
    }
  });
});

describe('EgressResolver', () => {
  let dns: DnsServer;
  let resolver: EgressResolver;
  const MANY = Array.from({ length: 40 }, (_, i) => `93.184.${Math.floor(i / 2)}.1`); // 20 distinct, each twice
  const LONG_LABEL = 'a'.repeat(63);
  const LONGEST = `${LONG_LABEL}.${LONG_LABEL}.${LONG_LABEL}.${'b'.repeat(56)}.test`; // 253 characters

  before(async () => {
    dns = await startDnsServer((name, type, n) => {
      if (name === 'both.test') return type === 'A' ? ['93.184.216.34'] : ['2606:2800:220:1:248:1893:25c8:1946'];
      if (name === 'v4only.test') return type === 'A' ? ['93.184.216.34'] : [];
      if (name === 'rebind.test') return type === 'A' ? [n === 1 ? '93.184.216.34' : '127.0.0.1'] : [];
      if (name === 'many.test') return type === 'A' ? MANY : [];
      if (name === 'private.test') return type === 'A' ? ['10.0.0.7'] : ['fd00:ec2::254'];
      if (name === 'silent.test') return 'no-reply';
      if (name === LONGEST) return type === 'A' ? ['93.184.216.34'] : [];
      return undefined;
    });
    resolver = new EgressResolver({ dnsServers: [dns.address], timeoutMs: 300, hosts: { 'Registry.Internal': ['10.0.0.5', 'fd00::5'] } });
  });
  after(() => dns.close());

  test('an IP literal is returned as is, with its family, and asks no server', async () => {
    const before = dns.queries();
    assert.deepEqual(await resolver.resolve('93.184.216.34'), { addresses: [{ address: '93.184.216.34', family: 4 }], source: 'literal' });
    assert.deepEqual(await resolver.resolve('::ffff:127.0.0.1'), { addresses: [{ address: '::ffff:127.0.0.1', family: 6 }], source: 'literal' });
    assert.deepEqual(await resolver.resolve('2606:4700::1111'), { addresses: [{ address: '2606:4700::1111', family: 6 }], source: 'literal' });
    assert.equal(dns.queries(), before);
  });

  test('a pinned name answers from hosts, case-insensitively and with a trailing dot, without DNS', async () => {
    const pinned = {
      addresses: [
        { address: '10.0.0.5', family: 4 },
        { address: 'fd00::5', family: 6 },
      ],
      source: 'hosts',
    };
    assert.deepEqual(await resolver.resolve('registry.internal'), pinned);
    assert.deepEqual(await resolver.resolve('REGISTRY.internal.'), pinned);
    assert.equal(dns.queries('registry.internal'), 0);
  });

  test('A and AAAA through the configured server; a family with no records is fine', async () => {
    assert.deepEqual(await resolver.resolve('Both.Test'), {
      addresses: [
        { address: '93.184.216.34', family: 4 },
        { address: '2606:2800:220:1:248:1893:25c8:1946', family: 6 },
      ],
      source: 'dns',
    });
    assert.equal(dns.queries('both.test', 'A'), 1);
    assert.equal(dns.queries('both.test', 'AAAA'), 1);
    assert.deepEqual((await resolver.resolve('v4only.test.')).addresses, [{ address: '93.184.216.34', family: 4 }]);
    const risky = await resolver.resolve('private.test');
    assert.deepEqual(
      risky.addresses.map(({ address }) => classifyAddress(address)),
      ['private', 'private'],
    );
  });

  test('every resolve asks the server again: a changed answer is seen, nothing is cached', async () => {
    const first = await resolver.resolve('rebind.test');
    const second = await resolver.resolve('rebind.test');
    assert.deepEqual(first.addresses, [{ address: '93.184.216.34', family: 4 }]);
    assert.deepEqual(second.addresses, [{ address: '127.0.0.1', family: 4 }]);
    assert.equal(dns.queries('rebind.test', 'A'), 2);
  });

  test('NXDOMAIN is not_found', async () => {
    await assert.rejects(resolver.resolve('nowhere.test'), (error: unknown) => error instanceof ResolveError && error.code === 'not_found');
    assert.ok(dns.queries('nowhere.test') >= 1);
  });

  test('a server that never answers is a timeout within the bound', async () => {
    const started = performance.now();
    await assert.rejects(resolver.resolve('silent.test'), (error: unknown) => error instanceof ResolveError && error.code === 'timeout');
    const elapsed = performance.now() - started;
    assert.ok(elapsed >= 250 && elapsed < 1_000, `timed out after ${Math.round(elapsed)} ms, bound 300 ms`);
    assert.ok(dns.queries('silent.test') >= 2, 'the server was asked');
  });

  test(`too many answers are capped at ${MAX_ADDRESSES}, duplicates dropped`, async () => {
    const { addresses } = await resolver.resolve('many.test');
    assert.equal(addresses.length, MAX_ADDRESSES);
    assert.equal(new Set(addresses.map(({ address }) => address)).size, MAX_ADDRESSES);
    assert.deepEqual(addresses[0], { address: '93.184.0.1', family: 4 });
  });

  test('the longest legal name (253 characters, 63 per label) is asked', async () => {
    assert.equal(LONGEST.length, 253);
    assert.deepEqual((await resolver.resolve(`${LONGEST}.`)).addresses, [{ address: '93.184.216.34', family: 4 }]);
  });

  test('invalid host names are refused before any DNS query', async () => {
    const invalid = [
      '',
      '.',
      'a..b',
      '.example.com',
      'example.com..',
      'exa mple.com',
      'example.com:443',
      '[::1]',
      'fe80::1%eth0',
      `${'a'.repeat(64)}.test`,
      `${LONGEST}x`,
      'bücher.test',
      'a/b.test',
      'a\n.test',
      'a\0.test',
      '*.example.com',
      '127.1',
      '2130706433',
      '0x7f000001',
      '10.0.0.010',
      '1.2.3.04',
      'x'.repeat(100_000),
    ];
    const before = dns.queries();
    for (const host of invalid) {
      await assert.rejects(
        resolver.resolve(host),
        (error: unknown) => error instanceof ResolveError && error.code === 'invalid_host',
        JSON.stringify(host.slice(0, 40)),
      );
    }
    // Not a string at all (a caller's bug or a JSON value): refused the same way.
    await assert.rejects(resolver.resolve(undefined as unknown as string), (error: unknown) => error instanceof ResolveError && error.code === 'invalid_host');
    assert.equal(dns.queries(), before);
  });

  test('localhost names are loopback without asking DNS (RFC 6761)', async () => {
    const before = dns.queries();
    const { addresses, source } = await new EgressResolver({ dnsServers: [dns.address] }).resolve('db.localhost');
    assert.equal(dns.queries(), before);
    assert.equal(source, 'dns');
    assert.ok(addresses.length >= 1);
    for (const { address, family } of addresses) {
      assert.ok(address === '127.0.0.1' || address === '::1', address);
      assert.equal(family, address === '::1' ? 6 : 4);
      assert.equal(classifyAddress(address), 'loopback');
    }
  });
});

describe('validateEgressResolverOptions', () => {
  test('accepts the documented forms', () => {
    validateEgressResolverOptions({});
    validateEgressResolverOptions({
      hosts: { 'registry.internal': ['10.0.0.5', 'fd00::5'] },
      dnsServers: ['1.1.1.1', '1.1.1.1:5353', '[::1]:53', '::1'],
      timeoutMs: 2_000,
    });
  });

  test('refuses each wrong field by name', () => {
    const cases: ReadonlyArray<readonly [unknown, string]> = [
      [{ hosts: ['10.0.0.5'] }, 'egress.hosts'],
      [{ hosts: { 'bad host': ['10.0.0.5'] } }, 'egress.hosts.bad host'],
      [{ hosts: { '10.0.0.9': ['10.0.0.5'] } }, 'egress.hosts.10.0.0.9'],
      [{ hosts: { 'registry.internal': [] } }, 'egress.hosts.registry.internal'],
      [{ hosts: { 'registry.internal': ['registry.example'] } }, 'egress.hosts.registry.internal'],
      [{ hosts: { 'registry.internal': ['fe80::1%eth0'] } }, 'egress.hosts.registry.internal'],
      [{ hosts: { 'registry.internal': '10.0.0.5' } }, 'egress.hosts.registry.internal'],
      [{ dnsServers: [] }, 'egress.dnsServers'],
      [{ dnsServers: ['dns.example'] }, 'egress.dnsServers'],
      [{ dnsServers: ['1.1.1.1:0'] }, 'egress.dnsServers'],
      [{ dnsServers: ['1.1.1.1:65536'] }, 'egress.dnsServers'],
      [{ dnsServers: ['[::1]53'] }, 'egress.dnsServers'],
      [{ timeoutMs: 0 }, 'egress.timeoutMs'],
      [{ timeoutMs: 1.5 }, 'egress.timeoutMs'],
      [{ timeoutMs: 3_600_000 }, 'egress.timeoutMs'],
    ];
    for (const [options, field] of cases) {
      assert.throws(
        () => validateEgressResolverOptions(options as never),
        (error: unknown) => error instanceof ValidationError && error.field === field,
        JSON.stringify(options),
      );
    }
    assert.throws(() => new EgressResolver({ timeoutMs: -1 }), ValidationError);
  });
});
