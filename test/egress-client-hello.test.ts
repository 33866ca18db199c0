// The CONNECT tunnel's ClientHello reader against hellos real clients sent to a loopback TCP server
// (Node, curl, openssl s_client, Python), delivered whole, a byte at a time and split at random
// points; against hellos re-framed across several records; against malformed and oversized ones;
// and, property-based, against random bytes and mutations of a real hello (never a throw, and the
// same answer however the bytes are chunked).
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import net from 'node:net';
import tls from 'node:tls';
import { before, describe, test } from 'node:test';
import fc from 'fast-check';
import { ClientHelloReader, type ClientHelloResult, MAX_CLIENT_HELLO_BYTES } from '../src/egress/client-hello.ts';

// ---- capture -------------------------------------------------------------------------------------

/**
 * Starts a loopback TCP server, lets `client` connect to its port, and resolves with the bytes of the
 * first complete TLS record it receives (real clients send their ClientHello in one record). The
 * server then closes the connection, so the client gives up; `client` returns a cleanup.
 */
async function capture(client: (port: number) => () => void): Promise<Buffer> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  let cleanup: (() => void) | undefined;
  try {
    return await new Promise<Buffer>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no ClientHello within 10 s')), 10_000);
      server.on('connection', (socket) => {
        let got = Buffer.alloc(0);
        socket.on('error', () => undefined);
        socket.on('data', (chunk: Buffer) => {
          got = Buffer.concat([got, chunk]);
          if (got.length < 5 || got.length < 5 + got.readUInt16BE(3)) return;
          clearTimeout(timer);
          socket.destroy();
          resolve(got.subarray(0, 5 + got.readUInt16BE(3)));
        });
      });
      cleanup = client(port);
    });
  } finally {
    cleanup?.();
    await new Promise((resolve) => server.close(resolve));
  }
}

function nodeClient(servername: string | undefined): (port: number) => () => void {
  return (port) => {
    const socket = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...(servername === undefined ? {} : { servername }) });
    socket.on('error', () => undefined);
    return () => socket.destroy();
  };
}

function processClient(command: string, args: (port: number) => string[]): (port: number) => () => void {
  return (port) => {
    const child = spawn(command, args(port), { stdio: ['pipe', 'ignore', 'ignore'] });
    child.on('error', () => undefined);
    return () => {
      if (child.exitCode === null && child.signalCode === null) child.kill();
    };
  };
}

const has = (command: string, args: string[]) => spawnSync(command, args, { stdio: 'ignore' }).status === 0;
const HAVE_CURL = has('curl', ['--version']);
const HAVE_OPENSSL = has('openssl', ['version']);
const HAVE_PYTHON = has('python3', ['-c', 'import ssl']);

const PYTHON_HELLO =
  'import socket, ssl, sys\n' +
  'c = ssl.create_default_context(); c.check_hostname = False; c.verify_mode = ssl.CERT_NONE\n' +
  's = socket.create_connection(("127.0.0.1", int(sys.argv[1])))\n' +
  'try:\n  c.wrap_socket(s, server_hostname=sys.argv[2])\nexcept Exception:\n  pass\n';

interface RealHello {
  name: string;
  skip?: string;
  client: (port: number) => () => void;
  expected: string | undefined;
}

const REAL: RealHello[] = [
  { name: 'Node tls.connect with a servername', client: nodeClient('Node-SNI.Example.TEST'), expected: 'node-sni.example.test' },
  { name: 'Node tls.connect to an IP literal (no SNI)', client: nodeClient(undefined), expected: undefined },
  {
    name: 'curl --resolve',
    skip: HAVE_CURL ? undefined : 'no curl',
    client: processClient('curl', (port) => [
      '-k',
      '-s',
      '--max-time',
      '10',
      `https://curl.example.test:${port}/`,
      '--resolve',
      `curl.example.test:${port}:127.0.0.1`,
    ]),
    expected: 'curl.example.test',
  },
  {
    name: 'openssl s_client -servername',
    skip: HAVE_OPENSSL ? undefined : 'no openssl',
    client: processClient('openssl', (port) => ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', 'openssl.example.test']),
    expected: 'openssl.example.test',
  },
  {
    name: 'Python ssl with server_hostname',
    skip: HAVE_PYTHON ? undefined : 'no python3 with ssl',
    client: processClient('python3', (port) => ['-c', PYTHON_HELLO, String(port), 'python_sni.example.test']),
    expected: 'python_sni.example.test',
  },
];

// ---- helpers ---------------------------------------------------------------------------------------

/** Pushes `bytes` in chunks cut at `cuts` (offsets, any order); returns the last result and checks buffered(). */
function pushSplit(bytes: Buffer, cuts: number[]): ClientHelloResult {
  const reader = new ClientHelloReader();
  const points = [...new Set(cuts.map((c) => Math.max(0, Math.min(bytes.length, c))))].sort((a, b) => a - b);
  let result: ClientHelloResult = { kind: 'more' };
  let from = 0;
  for (const to of [...points, bytes.length]) {
    result = reader.push(bytes.subarray(from, to));
    from = to;
  }
  assert.deepEqual(reader.buffered(), bytes);
  return result;
}

const pushWhole = (bytes: Buffer) => pushSplit(bytes, []);
const pushBytes = (bytes: Buffer) =>
  pushSplit(
    bytes,
    Array.from({ length: bytes.length }, (_, i) => i),
  );

function assertInvalid(result: ClientHelloResult, reason?: RegExp): void {
  assert.equal(result.kind, 'invalid', `expected invalid, got ${JSON.stringify(result)}`);
  if (reason && result.kind === 'invalid') assert.match(result.reason, reason);
}

const u16 = (n: number) => Buffer.from([n >> 8, n & 0xff]);
const u24 = (n: number) => Buffer.from([n >> 16, (n >> 8) & 0xff, n & 0xff]);

/** TLS records of type 0x16 carrying `handshake`, cut into fragments of the given sizes (the rest in one last record). */
function records(handshake: Buffer, sizes: number[] = [], version = 0x0301): Buffer {
  const out: Buffer[] = [];
  let at = 0;
  for (const size of [...sizes, handshake.length]) {
    const fragment = handshake.subarray(at, Math.min(handshake.length, at + size));
    if (fragment.length === 0) break;
    out.push(Buffer.from([0x16]), u16(version), u16(fragment.length), fragment);
    at += fragment.length;
  }
  return Buffer.concat(out);
}

/** The handshake bytes (header included) of a single-record hello. */
const handshakeOf = (hello: Buffer) => hello.subarray(5);

const extension = (type: number, data: Buffer) => Buffer.concat([u16(type), u16(data.length), data]);
const serverNameData = (...names: [number, Buffer | string][]) => {
  const list = Buffer.concat(names.map(([type, name]) => Buffer.concat([Buffer.from([type]), u16(name.length), Buffer.from(name)])));
  return Buffer.concat([u16(list.length), list]);
};
const sni = (name: Buffer | string) => extension(0, serverNameData([0, name]));

/** A ClientHello handshake message with the given extensions (undefined: no extensions block at all). */
function helloMessage(extensions: Buffer[] | undefined, type = 1): Buffer {
  const body = Buffer.concat([
    Buffer.from([0x03, 0x03]),
    Buffer.alloc(32, 7),
    Buffer.from([32]),
    Buffer.alloc(32, 9),
    u16(4),
    Buffer.from([0x13, 0x01, 0x13, 0x02]),
    Buffer.from([1, 0]),
    ...(extensions === undefined ? [] : [u16(Buffer.concat(extensions).length), ...extensions]),
  ]);
  return Buffer.concat([Buffer.from([type]), u24(body.length), body]);
}

const built = (extensions: Buffer[] | undefined) => records(helloMessage(extensions));

/** Offset of the server_name extension's type field in a real hello whose host_name is `name`. */
function serverNameOffset(hello: Buffer, name: string): number {
  const at = hello.indexOf(name);
  assert.ok(at > 0);
  // type(2) length(2) list length(2) name type(1) name length(2) name
  const offset = at - 9;
  assert.equal(hello.readUInt16BE(offset), 0);
  assert.equal(hello.readUInt16BE(at - 2), name.length);
  return offset;
}

// ---- tests -----------------------------------------------------------------------------------------

const captured = new Map<string, Buffer>();

describe('ClientHello reader: real clients', () => {
  before(async () => {
    for (const real of REAL) if (!real.skip) captured.set(real.name, await capture(real.client));
  });

  for (const real of REAL) {
    test(`${real.name}: whole, byte by byte and at random splits`, { skip: real.skip }, () => {
      const hello = captured.get(real.name)!;
      // One record carrying exactly one ClientHello.
      assert.equal(hello[0], 0x16);
      assert.equal(hello[5], 1);
      assert.equal(hello.readUIntBE(6, 3) + 4, hello.readUInt16BE(3));
      const expected: ClientHelloResult = { kind: 'hello', serverName: real.expected };
      assert.deepEqual(pushWhole(hello), expected);
      assert.deepEqual(pushBytes(hello), expected);
      fc.assert(
        fc.property(fc.array(fc.nat({ max: hello.length }), { maxLength: 12 }), (cuts) => {
          assert.deepEqual(pushSplit(hello, cuts), expected);
        }),
        { numRuns: 200 },
      );
      // Every prefix is 'more': the answer comes only with the hello's last byte.
      const reader = new ClientHelloReader();
      for (let i = 0; i < hello.length - 1; i++) assert.deepEqual(reader.push(hello.subarray(i, i + 1)), { kind: 'more' });
    });

    test(`${real.name}: re-framed across two records at every split point`, { skip: real.skip }, () => {
      const handshake = handshakeOf(captured.get(real.name)!);
      for (let cut = 1; cut < handshake.length; cut++) {
        const twoRecords = records(handshake, [cut]);
        assert.deepEqual(pushWhole(twoRecords), { kind: 'hello', serverName: real.expected }, `cut at ${cut}`);
      }
      assert.deepEqual(pushBytes(records(handshake, [1, 2, 3, 100])), { kind: 'hello', serverName: real.expected });
    });
  }

  test('bytes after the hello are buffered, and later pushes keep the final result', () => {
    const hello = captured.get(REAL[0]!.name)!;
    const reader = new ClientHelloReader();
    const tail = Buffer.from([0x14, 0x03, 0x03, 0x00, 0x01, 0x01]);
    const result = reader.push(Buffer.concat([hello, tail]));
    assert.deepEqual(result, { kind: 'hello', serverName: 'node-sni.example.test' });
    assert.deepEqual(reader.push(Buffer.from('more bytes')), result);
    assert.deepEqual(reader.buffered(), Buffer.concat([hello, tail, Buffer.from('more bytes')]));
  });
});

describe('ClientHello reader: built and malformed hellos', () => {
  test('a built hello: SNI, none, no extensions block, other extensions only', () => {
    assert.deepEqual(pushWhole(built([extension(10, Buffer.from([0, 2, 0, 29])), sni('Example.COM.')])), { kind: 'hello', serverName: 'example.com' });
    assert.deepEqual(pushWhole(built([sni('a_b.example')])), { kind: 'hello', serverName: 'a_b.example' });
    assert.deepEqual(pushWhole(built(undefined)), { kind: 'hello', serverName: undefined });
    assert.deepEqual(pushWhole(built([])), { kind: 'hello', serverName: undefined });
    assert.deepEqual(pushWhole(built([extension(0x0a0a, Buffer.alloc(0))])), { kind: 'hello', serverName: undefined });
    // A name type other than host_name is skipped.
    assert.deepEqual(pushWhole(built([extension(0, serverNameData([0, 'x.test'], [1, 'other']))])), { kind: 'hello', serverName: 'x.test' });
    assert.deepEqual(pushWhole(built([sni(`${'a.'.repeat(126)}b`)])), { kind: 'hello', serverName: `${'a.'.repeat(126)}b` });
  });

  test('not TLS: an HTTP request, an SSH banner, an SSLv2-style hello', () => {
    for (const text of ['GET / HTTP/1.1\r\nhost: x\r\n\r\n', 'SSH-2.0-OpenSSH_9.6\r\n']) {
      assert.deepEqual(pushWhole(Buffer.from(text)), { kind: 'not-tls' });
      assert.deepEqual(pushBytes(Buffer.from(text)), { kind: 'not-tls' });
    }
    assert.deepEqual(pushWhole(Buffer.from([0x80, 0x2e, 0x01, 0x03, 0x01])), { kind: 'not-tls' });
    assert.deepEqual(new ClientHelloReader().push(Buffer.alloc(0)), { kind: 'more' });
  });

  test('record layer: bad version, empty record, record over 2^14, a non-handshake record mid-hello', () => {
    assertInvalid(pushWhole(Buffer.from('\x16GET / HTTP/1.1', 'latin1')), /version/);
    assertInvalid(pushWhole(Buffer.from([0x16, 0x03, 0x01, 0x00, 0x00])), /empty/);
    assertInvalid(pushWhole(Buffer.from([0x16, 0x03, 0x01, 0x40, 0x01])), /2\^14/);
    assert.deepEqual(pushWhole(Buffer.from([0x16, 0x03, 0x01, 0x40, 0x00])), { kind: 'more' });
    const handshake = helloMessage([sni('x.test')]);
    const first = records(handshake.subarray(0, 20));
    const second = records(handshake.subarray(20));
    second[0] = 0x17;
    assertInvalid(pushWhole(Buffer.concat([first, second])), /non-handshake/);
  });

  test('handshake type other than client_hello', () => {
    assertInvalid(pushWhole(records(helloMessage([sni('x.test')], 2))), /not a ClientHello/);
    assertInvalid(pushWhole(Buffer.from([0x16, 0x03, 0x01, 0x00, 0x04, 0x0b, 0x00, 0x00, 0x00])), /not a ClientHello/);
  });

  test('bound: a 70 KiB hello, a declared length past 64 KiB, 64 KiB in one-byte records', () => {
    const big = helloMessage([extension(21, Buffer.alloc(70 * 1024)), sni('x.test')]);
    const framed = records(big, Array(8).fill(16384));
    assertInvalid(pushWhole(framed), /64 KiB/);
    assertInvalid(pushBytes(framed), /64 KiB/);
    // Refused on the handshake header, before the body arrives.
    assertInvalid(pushWhole(Buffer.from([0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x01, 0x18, 0x00])), /64 KiB/);
    // Just under the bound in four records is fine; the same hello in one-byte records is not (headers count).
    const padless = helloMessage([extension(21, Buffer.alloc(0)), sni('x.test')]).length;
    const fits = helloMessage([extension(21, Buffer.alloc(MAX_CLIENT_HELLO_BYTES - 4 * 5 - 50 - padless)), sni('x.test')]);
    const fitting = records(fits, [16384, 16384, 16384]);
    assert.ok(fitting.length <= MAX_CLIENT_HELLO_BYTES && fitting.length > MAX_CLIENT_HELLO_BYTES - 200);
    assert.deepEqual(pushWhole(fitting), { kind: 'hello', serverName: 'x.test' });
    assertInvalid(pushWhole(records(fits, Array(fits.length).fill(1))), /64 KiB/);
  });

  test('ClientHello fields: version, session_id, cipher_suites, compression_methods', () => {
    const base = helloMessage([sni('x.test')]);
    const patched = (at: number, value: number) => {
      const copy = Buffer.from(base);
      copy[4 + at] = value;
      return records(copy);
    };
    assertInvalid(pushWhole(patched(0, 0x02)), /legacy_version/);
    assertInvalid(pushWhole(patched(34, 33)), /session_id/);
    assertInvalid(pushWhole(patched(34 + 33 + 1, 3)), /cipher_suites/);
    assertInvalid(pushWhole(patched(34 + 33 + 1, 0)), /cipher_suites/);
    assertInvalid(pushWhole(patched(34 + 33 + 6, 0)), /compression/);
    assertInvalid(pushWhole(records(Buffer.from([1, 0, 0, 0]))), /legacy_version/);
  });

  test('truncated hello bodies: every cut is invalid but the one after compression_methods', () => {
    const hello = captured.get(REAL[0]!.name) ?? built([sni('x.test')]);
    const body = hello.subarray(9);
    const kinds: string[] = [];
    for (let cut = 0; cut < body.length; cut++) {
      const result = pushWhole(records(Buffer.concat([Buffer.from([1]), u24(cut), body.subarray(0, cut)])));
      kinds.push(result.kind === 'hello' ? `hello:${result.serverName}` : result.kind);
    }
    assert.deepEqual(
      kinds.filter((k) => k !== 'invalid'),
      ['hello:undefined'],
    );
  });

  test('lengths that run past their container', () => {
    const hello = captured.get(REAL[0]!.name)!;
    const name = 'Node-SNI.Example.TEST';
    const at = serverNameOffset(hello, name);
    const bumped = (offset: number, delta: number) => {
      const copy = Buffer.from(hello);
      copy.writeUInt16BE(copy.readUInt16BE(offset) + delta, offset);
      return copy;
    };
    // record(5) handshake header(4) version(2) random(32), then session_id, cipher_suites, compression_methods.
    let extensionsAt = 9 + 34;
    extensionsAt += 1 + hello[extensionsAt]!;
    extensionsAt += 2 + hello.readUInt16BE(extensionsAt);
    extensionsAt += 1 + hello[extensionsAt]!;
    assert.equal(hello.readUInt16BE(extensionsAt), hello.length - extensionsAt - 2);
    assertInvalid(pushWhole(bumped(extensionsAt, 1)), /extensions length/);
    assertInvalid(pushWhole(bumped(extensionsAt, -1)), /extensions length|runs past/);
    assertInvalid(pushWhole(bumped(at + 2, 1)), /runs past|does not match/);
    assertInvalid(pushWhole(bumped(at + 4, 1)), /server_name_list/);
    assertInvalid(pushWhole(bumped(at + 4, -1)), /server_name_list/);
    assertInvalid(pushWhole(bumped(at + 7, 1)), /runs past/);
    assertInvalid(pushWhole(bumped(at + 7, 0xff00)), /runs past/);
    // An extension header cut short at the end of the block.
    assertInvalid(pushWhole(built([sni('x.test'), Buffer.from([0, 5, 0])])), /runs past/);
  });

  test('server_name: two host_names, duplicated extension, empty list, no host_name', () => {
    assertInvalid(pushWhole(built([extension(0, serverNameData([0, 'a.test'], [0, 'b.test']))])), /more than one host_name/);
    assertInvalid(pushWhole(built([extension(0, serverNameData([0, 'a.test'], [0, 'a.test']))])), /more than one host_name/);
    assertInvalid(pushWhole(built([sni('a.test'), extension(10, Buffer.alloc(2)), sni('b.test')])), /duplicated server_name/);
    assertInvalid(pushWhole(built([extension(0, u16(0))])), /empty server_name_list/);
    assertInvalid(pushWhole(built([extension(0, Buffer.alloc(0))])), /server_name_list/);
    assertInvalid(pushWhole(built([extension(0, serverNameData([1, 'a.test']))])), /without a host_name/);
  });

  test('host_name: empty, bad bytes, too long, empty labels', () => {
    for (const name of ['', '.', 'a b.test', 'a\0.test', 'é.test', 'a/b', 'a:443', 'a..b', '.a', `${'a'.repeat(64)}.test`]) {
      assertInvalid(pushWhole(built([sni(Buffer.from(name, 'utf8'))])), /host_name/);
    }
    assertInvalid(pushWhole(built([sni(`${'a.'.repeat(126)}bc`)])), /253/);
    assert.deepEqual(pushWhole(built([sni(`${'a.'.repeat(126)}b.`)])), { kind: 'hello', serverName: `${'a.'.repeat(126)}b` });
  });
});

describe('ClientHello reader: properties', () => {
  const agree = (bytes: Buffer, cuts: number[]) => {
    const whole = pushWhole(bytes);
    assert.deepEqual(pushBytes(bytes), whole);
    assert.deepEqual(pushSplit(bytes, cuts), whole);
    return whole;
  };

  test('random bytes never throw and agree however they are chunked', () => {
    const tlsish = fc
      .tuple(fc.constantFrom(0x16, 0x17, 0x47), fc.constantFrom(0x03, 0x02), fc.nat({ max: 0xff }), fc.uint8Array({ maxLength: 600 }))
      .map(([a, b, c, rest]) => Buffer.concat([Buffer.from([a, b, c]), Buffer.from(rest)]));
    fc.assert(
      fc.property(
        fc.oneof(
          fc.uint8Array({ maxLength: 600 }).map((a) => Buffer.from(a)),
          tlsish,
        ),
        fc.array(fc.nat({ max: 600 }), { maxLength: 8 }),
        (bytes, cuts) => {
          agree(bytes, cuts);
        },
      ),
      { numRuns: 400 },
    );
  });

  test('mutations of a real hello never throw and agree however they are chunked', () => {
    const hello = captured.get(REAL[0]!.name) ?? built([sni('x.test')]);
    const mutation = fc.oneof(
      fc.tuple(fc.constant('set' as const), fc.nat({ max: hello.length - 1 }), fc.nat({ max: 255 })),
      fc.tuple(fc.constant('cut' as const), fc.nat({ max: hello.length - 1 }), fc.nat({ max: 64 })),
      fc.tuple(fc.constant('insert' as const), fc.nat({ max: hello.length - 1 }), fc.nat({ max: 255 })),
    );
    const seen = new Set<string>();
    fc.assert(
      fc.property(fc.array(mutation, { minLength: 1, maxLength: 4 }), fc.array(fc.nat({ max: hello.length }), { maxLength: 8 }), (mutations, cuts) => {
        let bytes = Buffer.from(hello);
        for (const [kind, at, value] of mutations) {
          if (kind === 'set') bytes[Math.min(at, bytes.length - 1)] = value;
          else if (kind === 'cut') bytes = Buffer.concat([bytes.subarray(0, at), bytes.subarray(at + value)]);
          else bytes = Buffer.concat([bytes.subarray(0, at), Buffer.from([value]), bytes.subarray(at)]);
          if (bytes.length === 0) return;
        }
        seen.add(agree(bytes, cuts).kind);
      }),
      { numRuns: 400 },
    );
    // The mutations reach the outcomes that need parsing (a mutated first byte, for 'not-tls', is rare): the property is not vacuous.
    for (const kind of ['hello', 'invalid', 'more']) assert.ok(seen.has(kind), `no mutation gave '${kind}'`);
  });
});
