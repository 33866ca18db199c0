// The live page: a small read-only HTTP server (never on a key's socket, loopback by default) that
// serves one self-contained page and an SSE stream of what the gateway does: a snapshot from
// `inspect()` every 2 s (live keys, groups, calls in flight; never recent-call bodies or credentials)
// and a bounded summary of each call as it ends. The last two hours of per-minute aggregates live in
// a bounded ring so a page opened now still draws its charts. Clients are few and bounded, and one
// that stops reading is dropped rather than buffered for.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Gateway, GatewaySnapshot } from '../gateway.ts';
import type { CallRecord } from '../metering/call-record.ts';
import { classifyAddress } from '../egress/addresses.ts';
import type { ListenAddress } from '../util/listen.ts';
import type { TelemetrySink } from './sink.ts';
import { uiPage } from './ui-page.ts';

export interface UiOptions {
  listen: ListenAddress;
  gateway: Pick<Gateway, 'inspect'>;
  /** Required when listen.host is not a loopback address: requests must carry it (?token= or Authorization: Bearer). */
  token?: string;
}

/** What the page is told of one call: no bodies, no headers, no path. */
interface CallSummary {
  time: number;
  keyId: string;
  group: string;
  label?: string;
  model?: string;
  status: number;
  errorKind?: string;
  inputTokens?: number;
  outputTokens?: number;
  costUsd: number;
  latencyMs: number;
  stream: boolean;
}

interface MinuteBucket {
  minute: number;
  calls: number;
  refusals: number;
  spend: Record<string, number>;
}

const MAX_CLIENTS = 16;
const SNAPSHOT_MS = 2000;
const KEEPALIVE_MS = 15_000;
/** Minutes of history kept (and drawn). */
const HISTORY_MINUTES = 120;
/** Groups one minute's bucket tracks by name; the rest are summed under OTHER_GROUP. */
const MAX_GROUPS_PER_MINUTE = 32;
const OTHER_GROUP = '(other groups)';
const MAX_RECENT_REFUSALS = 50;
/** Keys listed in one snapshot (busiest first); the rest are only counted. */
const MAX_KEYS = 500;
/** Bytes a client may leave unread before it is dropped. */
const MAX_UNREAD_BYTES = 1024 * 1024;

export async function startUiServer(options: UiOptions): Promise<TelemetrySink & { url: string }> {
  const loopback = isLoopback(options.listen.host);
  if (!loopback && !options.token) {
    throw new Error(`the live page listens on ${options.listen.host}, which is not a loopback address: give it a token`);
  }
  const expected = options.token === undefined ? undefined : digest(options.token);
  const history = new History();
  const clients = new Set<http.ServerResponse>();
  const sockets = new Set<Socket>();

  const send = (res: http.ServerResponse, chunk: string): void => {
    res.write(chunk);
    // A client that does not read is not buffered for: past the bound it is cut off.
    if (res.writableLength > MAX_UNREAD_BYTES) drop(res);
  };
  const drop = (res: http.ServerResponse): void => {
    clients.delete(res);
    res.destroy();
  };
  const broadcast = (chunk: string): void => {
    for (const res of clients) send(res, chunk);
  };
  const snapshotEvent = (withHistory: boolean): string =>
    sseEvent('snapshot', { ...pageSnapshot(options.gateway.inspect()), ...(withHistory ? { history: history.toJSON() } : {}) });

  const server = http.createServer((req, res) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return plain(res, 405, 'method not allowed\n', { allow: 'GET, HEAD' });
    const url = new URL(req.url ?? '/', 'http://page');
    if (!authorized(req, url, expected, loopback)) return plain(res, 401, 'unauthorized\n', { 'www-authenticate': 'Bearer' });
    if (url.pathname === '/') {
      const nonce = randomBytes(16).toString('base64');
      res.writeHead(200, {
        ...SECURITY_HEADERS,
        'content-type': 'text/html; charset=utf-8',
        'content-security-policy': `default-src 'none'; script-src 'nonce-${nonce}'; style-src 'nonce-${nonce}'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`,
      });
      return void res.end(req.method === 'HEAD' ? undefined : uiPage(nonce));
    }
    if (url.pathname === '/events') {
      if (clients.size >= MAX_CLIENTS) return plain(res, 503, 'too many live pages open\n', { 'retry-after': '10' });
      res.writeHead(200, { ...SECURITY_HEADERS, 'content-type': 'text/event-stream', connection: 'keep-alive' });
      if (req.method === 'HEAD') return void res.end();
      clients.add(res);
      res.on('close', () => clients.delete(res));
      send(res, `retry: ${SNAPSHOT_MS}\n\n`);
      send(res, snapshotEvent(true));
      return;
    }
    plain(res, 404, 'not found\n');
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  // Bounded headers and idle sockets: this server faces a browser, not clients that take minutes.
  server.headersTimeout = 10_000;
  server.requestTimeout = 10_000;
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.listen.port, options.listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;

  const snapshots = setInterval(() => {
    if (clients.size === 0) return;
    try {
      broadcast(snapshotEvent(false));
    } catch {
      // inspect() failing (the gateway closing) leaves the pages on their last snapshot.
    }
  }, SNAPSHOT_MS);
  const keepalive = setInterval(() => broadcast(': keep-alive\n\n'), KEEPALIVE_MS);
  snapshots.unref();
  keepalive.unref();

  return {
    url: `http://${host}:${address.port}/`,
    onCall(record) {
      try {
        const summary = summarize(record);
        history.add(summary);
        if (clients.size > 0) broadcast(sseEvent('call', summary));
      } catch {
        // Never on the request path's account: a page misses one call rather than the call failing.
      }
    },
    async close() {
      clearInterval(snapshots);
      clearInterval(keepalive);
      for (const res of clients) res.end();
      clients.clear();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of sockets) socket.destroy();
      await closed;
    },
  };
}

const SECURITY_HEADERS = {
  'x-content-type-options': 'nosniff',
  'cache-control': 'no-store',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
} as const;

function plain(res: http.ServerResponse, status: number, text: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { ...SECURITY_HEADERS, 'content-type': 'text/plain; charset=utf-8', ...headers });
  res.end(text);
}

function sseEvent(name: string, data: unknown): string {
  // JSON.stringify escapes newlines, so the data is one line.
  return `event: ${name}\ndata: ${JSON.stringify(data)}\n\n`;
}

/** The loopback names and addresses (127.0.0.0/8, ::1, their mapped forms, `localhost`). */
function isLoopback(host: string): boolean {
  const bare = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
  if (bare.toLowerCase() === 'localhost') return true;
  try {
    return classifyAddress(bare) === 'loopback';
  } catch {
    return false;
  }
}

/** SHA-256 of a token: equal-length digests for timingSafeEqual, whatever the lengths sent. */
function digest(token: string): Buffer {
  return createHash('sha256').update(token).digest();
}

function authorized(req: http.IncomingMessage, url: URL, expected: Buffer | undefined, loopback: boolean): boolean {
  if (expected === undefined) {
    // No token, so a loopback listener: a page on another site that rebinds its DNS name to 127.0.0.1
    // reaches this server with its own name in Host; only loopback names are served.
    const host = (req.headers.host ?? '').replace(/:\d+$/, '');
    return loopback && isLoopback(host);
  }
  const bearer = /^Bearer (.+)$/i.exec(req.headers.authorization ?? '')?.[1];
  const given = url.searchParams.get('token') ?? bearer;
  return given !== undefined && given !== null && timingSafeEqual(digest(given), expected);
}

function summarize(record: CallRecord): CallSummary {
  return {
    time: record.time,
    keyId: record.keyId,
    group: record.group,
    ...(record.label !== undefined ? { label: record.label } : {}),
    ...(record.model !== undefined ? { model: record.model } : {}),
    status: record.status,
    ...(record.errorKind !== undefined ? { errorKind: record.errorKind } : {}),
    ...(record.inputTokens !== undefined ? { inputTokens: record.inputTokens } : {}),
    ...(record.outputTokens !== undefined ? { outputTokens: record.outputTokens } : {}),
    costUsd: record.costUsd,
    latencyMs: record.latencyMs,
    stream: record.stream,
  };
}

/** What the page shows of `inspect()`: keys and groups with their figures, nothing of recent calls. */
function pageSnapshot(snapshot: GatewaySnapshot) {
  const keys = [...snapshot.keys].sort((a, b) => b.inFlight - a.inFlight || b.spentUsd - a.spentUsd).slice(0, MAX_KEYS);
  return {
    keys: keys.map((key) => ({
      id: key.id,
      group: key.group,
      ...(key.label !== undefined ? { label: key.label } : {}),
      spentUsd: key.spentUsd,
      reservedUsd: key.reservedUsd,
      inFlight: key.inFlight,
      calls: key.calls,
      requestsLastMinute: key.requestsLastMinute,
    })),
    keysOmitted: snapshot.keys.length - keys.length,
    groups: snapshot.groups.map((group) => ({
      group: group.group,
      spentUsd: group.spentUsd,
      reservedUsd: group.reservedUsd,
      ...(group.budgetUsd !== undefined ? { budgetUsd: group.budgetUsd } : {}),
      liveKeys: group.liveKeys,
    })),
    totals: snapshot.totals,
  };
}

/** The last HISTORY_MINUTES minutes of calls and spend, one bucket a minute, and the latest refusals. */
class History {
  readonly #minutes: MinuteBucket[] = [];
  readonly #refusals: CallSummary[] = [];

  add(call: CallSummary): void {
    const minute = Math.floor(call.time / 60_000);
    let bucket = this.#minutes.find((b) => b.minute === minute);
    if (!bucket) {
      // No prototype: group names are client data, and `__proto__` or `constructor` must stay plain keys.
      bucket = { minute, calls: 0, refusals: 0, spend: Object.create(null) as Record<string, number> };
      this.#minutes.push(bucket);
      this.#minutes.sort((a, b) => a.minute - b.minute);
      this.#trim(Math.max(minute, Math.floor(Date.now() / 60_000)));
    }
    bucket.calls++;
    if (call.status >= 400) {
      bucket.refusals++;
      this.#refusals.unshift(call);
      this.#refusals.length = Math.min(this.#refusals.length, MAX_RECENT_REFUSALS);
    }
    if (call.costUsd > 0) {
      const names = Object.keys(bucket.spend);
      const group = Object.hasOwn(bucket.spend, call.group) || names.length < MAX_GROUPS_PER_MINUTE ? call.group : OTHER_GROUP;
      bucket.spend[group] = (bucket.spend[group] ?? 0) + call.costUsd;
    }
  }

  toJSON() {
    this.#trim(Math.floor(Date.now() / 60_000));
    return { minutes: this.#minutes, refusals: this.#refusals };
  }

  #trim(nowMinute: number): void {
    while (this.#minutes.length > 0 && this.#minutes[0]!.minute <= nowMinute - HISTORY_MINUTES) this.#minutes.shift();
    // Clock jumps aside, at most HISTORY_MINUTES buckets; this bounds them even then.
    if (this.#minutes.length > HISTORY_MINUTES) this.#minutes.splice(0, this.#minutes.length - HISTORY_MINUTES);
  }
}
