// The CONNECT tunnel checks that the TLS server name a client sends equals the host it asked to
// CONNECT to, so a tunnel allowed for one name cannot reach another name behind the same address
// (a shared front end routes by SNI). This reads the client's first bytes after `200 Connection
// Established` as they arrive: the TLS record layer, the ClientHello reassembled from its handshake
// records, and the host_name of its server_name extension. Every length is the client's word and is
// checked against its container; the whole hello and the records carrying it are bounded to 64 KiB,
// and each byte is looked at a bounded number of times, so byte-by-byte delivery stays linear.
//
// Limits, by design: with Encrypted Client Hello the name read is the outer (public) one, which is
// what the tunnel checks; the inner name is for the server to hold to. Only the first ClientHello is
// read: after a HelloRetryRequest the second one must carry the same server_name (RFC 8446 §4.1.2),
// which is for the server to enforce.

export type ClientHelloResult =
  /** Need more bytes. */
  | { kind: 'more' }
  /** The first byte is not a TLS handshake record (0x16). */
  | { kind: 'not-tls' }
  /** A complete ClientHello: its host_name SNI, lower-cased, trailing dot removed; undefined when it has no SNI. */
  | { kind: 'hello'; serverName: string | undefined }
  /** TLS-looking but malformed, or larger than the bound. */
  | { kind: 'invalid'; reason: string };

/** The ClientHello message and the record headers carrying it, together at most this many bytes. */
export const MAX_CLIENT_HELLO_BYTES = 64 * 1024;

const HANDSHAKE_RECORD = 0x16;
const CLIENT_HELLO = 1;
const MAX_RECORD_BODY = 2 ** 14;
const RECORD_HEADER = 5;
const HANDSHAKE_HEADER = 4;
const SERVER_NAME_EXTENSION = 0;
const HOST_NAME = 0;
const MAX_NAME_CHARS = 253;

const MORE: ClientHelloResult = { kind: 'more' };

function invalid(reason: string): ClientHelloResult {
  return { kind: 'invalid', reason };
}

/** Reads one ClientHello from the chunks a client sends. */
export class ClientHelloReader {
  /** Every byte pushed, in a buffer that doubles as it fills: a trickle of tiny chunks costs no more than their bytes. */
  #data = Buffer.alloc(0);
  #length = 0;
  #result: ClientHelloResult = MORE;
  /** Bytes consumed by the parse so far (record headers and bodies up to the hello's end). */
  #consumed = 0;
  #recordHeader = Buffer.alloc(RECORD_HEADER);
  #recordHeaderFill = 0;
  /** Bytes of the current record's body still to come; 0 between records. */
  #recordLeft = 0;
  #handshakeHeader = Buffer.alloc(HANDSHAKE_HEADER);
  #handshakeHeaderFill = 0;
  /** The ClientHello body, allocated once its length is known. */
  #body: Buffer | undefined;
  #bodyFill = 0;

  /** Feeds the next chunk the client sent; returns the state after it. After a final result (anything but 'more'), further pushes return the same result.
   * Their bytes still join `buffered()`, unbounded here: the tunnel stops pushing once it has an answer. */
  push(chunk: Buffer): ClientHelloResult {
    this.#append(chunk);
    if (this.#result.kind !== 'more') return this.#result;
    this.#result = this.#consume(chunk);
    return this.#result;
  }

  /** Every byte pushed so far, in order (the tunnel forwards them once the check passes). */
  buffered(): Buffer {
    return this.#data.subarray(0, this.#length);
  }

  #append(chunk: Buffer): void {
    if (this.#length + chunk.length > this.#data.length) {
      const grown = Buffer.allocUnsafe(Math.max(this.#length + chunk.length, 2 * this.#data.length, 1024));
      this.#data.copy(grown, 0, 0, this.#length);
      this.#data = grown;
    }
    chunk.copy(this.#data, this.#length);
    this.#length += chunk.length;
  }

  #consume(chunk: Buffer): ClientHelloResult {
    let at = 0;
    while (at < chunk.length) {
      if (this.#recordLeft === 0) {
        if (this.#consumed === 0 && chunk[at] !== HANDSHAKE_RECORD) return { kind: 'not-tls' };
        const n = Math.min(RECORD_HEADER - this.#recordHeaderFill, chunk.length - at);
        chunk.copy(this.#recordHeader, this.#recordHeaderFill, at, at + n);
        this.#recordHeaderFill += n;
        at += n;
        if (!this.#count(n)) return invalid('ClientHello records exceed 64 KiB');
        if (this.#recordHeaderFill < RECORD_HEADER) continue;
        const header = this.#recordHeader;
        if (header[0] !== HANDSHAKE_RECORD) return invalid('a non-handshake record before the ClientHello is complete');
        if (header[1] !== 0x03) return invalid('record version is not 3.x');
        const length = header.readUInt16BE(3);
        if (length === 0) return invalid('empty handshake record');
        if (length > MAX_RECORD_BODY) return invalid('record longer than 2^14 bytes');
        this.#recordHeaderFill = 0;
        this.#recordLeft = length;
      } else {
        const n = Math.min(this.#recordLeft, chunk.length - at);
        this.#recordLeft -= n;
        if (!this.#count(n)) return invalid('ClientHello records exceed 64 KiB');
        const result = this.#handshake(chunk.subarray(at, at + n));
        at += n;
        if (result.kind !== 'more') return result;
      }
    }
    return MORE;
  }

  /** Adds `n` consumed bytes; false past the bound. */
  #count(n: number): boolean {
    this.#consumed += n;
    return this.#consumed <= MAX_CLIENT_HELLO_BYTES;
  }

  /** Takes handshake bytes from a record body; bytes after the ClientHello's end are not read. */
  #handshake(bytes: Buffer): ClientHelloResult {
    let at = 0;
    if (this.#body === undefined) {
      const n = Math.min(HANDSHAKE_HEADER - this.#handshakeHeaderFill, bytes.length);
      bytes.copy(this.#handshakeHeader, this.#handshakeHeaderFill, 0, n);
      this.#handshakeHeaderFill += n;
      at = n;
      if (this.#handshakeHeaderFill < HANDSHAKE_HEADER) return MORE;
      if (this.#handshakeHeader[0] !== CLIENT_HELLO) return invalid('first handshake message is not a ClientHello');
      const length = this.#handshakeHeader.readUIntBE(1, 3);
      if (HANDSHAKE_HEADER + length > MAX_CLIENT_HELLO_BYTES) return invalid('ClientHello longer than 64 KiB');
      this.#body = Buffer.alloc(length);
    }
    const body = this.#body;
    const n = Math.min(body.length - this.#bodyFill, bytes.length - at);
    bytes.copy(body, this.#bodyFill, at, at + n);
    this.#bodyFill += n;
    return this.#bodyFill < body.length ? MORE : parseClientHello(body);
  }
}

/** A bounds-checked cursor over a buffer: every read says whether it fit. */
class Cursor {
  readonly buf: Buffer;
  at: number;
  readonly end: number;
  constructor(buf: Buffer, at: number, end: number) {
    this.buf = buf;
    this.at = at;
    this.end = end;
  }
  get left(): number {
    return this.end - this.at;
  }
  u8(): number | undefined {
    return this.left >= 1 ? this.buf[this.at++]! : undefined;
  }
  u16(): number | undefined {
    if (this.left < 2) return undefined;
    const value = this.buf.readUInt16BE(this.at);
    this.at += 2;
    return value;
  }
  /** A sub-cursor over the next `length` bytes, which this one skips; undefined when they run past the end. */
  take(length: number): Cursor | undefined {
    if (length > this.left) return undefined;
    const sub = new Cursor(this.buf, this.at, this.at + length);
    this.at += length;
    return sub;
  }
  /** A vector with a `width`-byte length prefix. */
  vector(width: 1 | 2): Cursor | undefined {
    const length = width === 1 ? this.u8() : this.u16();
    return length === undefined ? undefined : this.take(length);
  }
}

/** Walks a complete ClientHello body (after the 4-byte handshake header). */
function parseClientHello(body: Buffer): ClientHelloResult {
  const c = new Cursor(body, 0, body.length);
  const major = c.u8();
  if (major === undefined || c.u8() === undefined) return invalid('truncated legacy_version');
  if (major !== 0x03) return invalid('legacy_version is not 3.x');
  if (c.take(32) === undefined) return invalid('truncated random');
  const sessionId = c.vector(1);
  if (sessionId === undefined) return invalid('session_id runs past the ClientHello');
  if (sessionId.left > 32) return invalid('session_id longer than 32 bytes');
  const suites = c.vector(2);
  if (suites === undefined) return invalid('cipher_suites run past the ClientHello');
  if (suites.left < 2 || suites.left % 2 !== 0) return invalid('cipher_suites length is not a positive even number');
  const compression = c.vector(1);
  if (compression === undefined) return invalid('compression_methods run past the ClientHello');
  if (compression.left < 1) return invalid('no compression_methods');
  if (c.left === 0) return { kind: 'hello', serverName: undefined };
  const extensions = c.vector(2);
  if (extensions === undefined || c.left !== 0) return invalid('extensions length does not match the ClientHello');
  let serverName: string | undefined;
  let seen = false;
  while (extensions.left > 0) {
    const type = extensions.u16();
    const data = type === undefined ? undefined : extensions.vector(2);
    if (data === undefined) return invalid('an extension runs past the extensions block');
    if (type !== SERVER_NAME_EXTENSION) continue;
    if (seen) return invalid('duplicated server_name extension');
    seen = true;
    const name = readServerName(data);
    if (typeof name !== 'string') return name;
    serverName = name;
  }
  return { kind: 'hello', serverName };
}

/** The server_name extension's data (RFC 6066 §3): its one host_name, checked and normalised. */
function readServerName(data: Cursor): string | ClientHelloResult {
  const list = data.vector(2);
  if (list === undefined || data.left !== 0) return invalid('server_name_list length does not match its extension');
  if (list.left === 0) return invalid('empty server_name_list');
  let hostName: Cursor | undefined;
  while (list.left > 0) {
    const nameType = list.u8();
    // Every name type is a 16-bit-length vector in practice; only host_name is defined.
    const name = nameType === undefined ? undefined : list.vector(2);
    if (name === undefined) return invalid('a server_name entry runs past its list');
    if (nameType !== HOST_NAME) continue;
    if (hostName !== undefined) return invalid('more than one host_name');
    hostName = name;
  }
  if (hostName === undefined) return invalid('server_name without a host_name');
  return checkHostName(hostName.buf.subarray(hostName.at, hostName.end));
}

/** A DNS name's bytes ('_' tolerated), lower-cased, one trailing dot removed; anything else is invalid. */
function checkHostName(bytes: Buffer): string | ClientHelloResult {
  let end = bytes.length;
  if (end > 0 && bytes[end - 1] === 0x2e) end--;
  if (end === 0) return invalid('empty host_name');
  if (end > MAX_NAME_CHARS) return invalid('host_name longer than 253 characters');
  let label = 0;
  for (let i = 0; i < end; i++) {
    const b = bytes[i]!;
    if (b === 0x2e) {
      if (label === 0) return invalid('host_name has an empty label');
      label = 0;
      continue;
    }
    const ok = (b >= 0x61 && b <= 0x7a) || (b >= 0x41 && b <= 0x5a) || (b >= 0x30 && b <= 0x39) || b === 0x2d || b === 0x5f;
    if (!ok) return invalid('host_name has a byte outside a DNS name');
    if (++label > 63) return invalid('host_name has a label longer than 63 characters');
  }
  return bytes.toString('latin1', 0, end).toLowerCase();
}
