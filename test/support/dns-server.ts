// A real DNS server over UDP on 127.0.0.1, small and hand-written, for the egress tests: it answers A and
// AAAA questions from a function of (name, type, query number), so a test can make a name's answer
// change between queries (DNS rebinding) and count how many queries each name received (a host the
// proxy refuses on syntax must cause none). TTL 0, so nothing along the way may cache an answer.
import dgram from 'node:dgram';
import net from 'node:net';

export type RecordType = 'A' | 'AAAA';

/**
 * Addresses to answer with; undefined answers NXDOMAIN; 'no-reply' sends nothing (a server that never
 * answers). `queryNumber` counts this name's queries of this type, from 1.
 */
export type Answer = (name: string, type: RecordType, queryNumber: number) => string[] | undefined | 'no-reply';

export interface DnsServer {
  /** '127.0.0.1:port', as EgressResolverOptions.dnsServers takes it. */
  readonly address: string;
  readonly port: number;
  /** Queries received for `name` (lowercase, no trailing dot), of `type` or of any type; all queries when no name is given. */
  queries(name?: string, type?: RecordType | number): number;
  close(): Promise<void>;
}

const TYPES: Readonly<Record<number, RecordType>> = { 1: 'A', 28: 'AAAA' };
const TYPE_CODES: Readonly<Record<RecordType, number>> = { A: 1, AAAA: 28 };

export async function startDnsServer(answer: Answer): Promise<DnsServer> {
  const socket = dgram.createSocket('udp4');
  const counts = new Map<string, number>(); // `${name} ${qtype}` -> queries
  let total = 0;

  socket.on('message', (packet, remote) => {
    const question = parseQuery(packet);
    if (!question) return; // not a query we can read: a real server would answer FORMERR, the tests need nothing
    total++;
    const key = `${question.name} ${question.qtype}`;
    const number = (counts.get(key) ?? 0) + 1;
    counts.set(key, number);
    const type = TYPES[question.qtype];
    // Other types (MX, TXT, ...) get an empty NOERROR answer: the name exists, with no such records.
    const addresses = type ? answer(question.name, type, number) : [];
    if (addresses === 'no-reply') return;
    socket.send(response(packet, question, addresses), remote.port, remote.address);
  });
  socket.on('error', () => {}); // a send to a vanished client port must not crash the test runner

  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  const { port } = socket.address();
  return {
    address: `127.0.0.1:${port}`,
    port,
    queries(name, type) {
      if (name === undefined) return total;
      const codes = type === undefined ? Object.keys(TYPES).map(Number) : [typeof type === 'number' ? type : TYPE_CODES[type]];
      return codes.reduce((sum, code) => sum + (counts.get(`${name} ${code}`) ?? 0), 0);
    },
    close: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  };
}

interface Question {
  /** Lowercase, labels joined by '.', no trailing dot. */
  name: string;
  qtype: number;
  /** Offset just past the question (QNAME, QTYPE, QCLASS). */
  end: number;
}

/** The first question of a standard query, or undefined for anything else. */
function parseQuery(packet: Buffer): Question | undefined {
  if (packet.length < 12) return undefined;
  const flags = packet.readUInt16BE(2);
  if (flags & 0x8000 || ((flags >> 11) & 0xf) !== 0) return undefined; // a response, or not a standard query
  if (packet.readUInt16BE(4) < 1) return undefined;
  const labels: string[] = [];
  let at = 12;
  for (;;) {
    if (at >= packet.length) return undefined;
    const length = packet[at]!;
    at++;
    if (length === 0) break;
    if (length > 63 || at + length > packet.length) return undefined; // compression pointers do not occur in a question
    labels.push(packet.toString('latin1', at, at + length).toLowerCase());
    at += length;
  }
  if (at + 4 > packet.length) return undefined;
  return { name: labels.join('.'), qtype: packet.readUInt16BE(at), end: at + 4 };
}

/** The response to `query`: its question echoed, then one record per address (NXDOMAIN when undefined). */
function response(query: Buffer, question: Question, addresses: string[] | undefined): Buffer {
  const header = Buffer.alloc(12);
  query.copy(header, 0, 0, 2); // ID
  const rd = query.readUInt16BE(2) & 0x0100;
  // QR, AA, the query's RD, RA; RCODE 3 (NXDOMAIN) or 0.
  header.writeUInt16BE(0x8000 | 0x0400 | rd | 0x0080 | (addresses === undefined ? 3 : 0), 2);
  header.writeUInt16BE(1, 4); // QDCOUNT
  const records = (addresses ?? []).map((address) => {
    const family = net.isIP(address);
    const rdata = family === 4 ? Buffer.from(address.split('.').map(Number)) : ipv6Rdata(address);
    const record = Buffer.alloc(12);
    record.writeUInt16BE(0xc00c, 0); // the name: a pointer to the question's
    record.writeUInt16BE(family === 4 ? 1 : 28, 2);
    record.writeUInt16BE(1, 4); // class IN
    record.writeUInt32BE(0, 6); // TTL 0
    record.writeUInt16BE(rdata.length, 10);
    return Buffer.concat([record, rdata]);
  });
  header.writeUInt16BE(records.length, 6); // ANCOUNT
  return Buffer.concat([header, query.subarray(12, question.end), ...records]);
}

/** The 16 bytes of an IPv6 address (full or with '::'; no embedded dotted IPv4). */
function ipv6Rdata(address: string): Buffer {
  const [head, tail] = address.split('::') as [string, string | undefined];
  const groups = (part: string | undefined) => (part ? part.split(':').map((group) => Number.parseInt(group, 16)) : []);
  const left = groups(head);
  const right = groups(tail);
  const all = tail === undefined ? left : [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right];
  const bytes = Buffer.alloc(16);
  for (const [i, group] of all.entries()) bytes.writeUInt16BE(group, 2 * i);
  return bytes;
}
