// The guard in front of a key's TCP listener (TCP mode, docs/deploy.md). A Unix socket is the key's
// identity by itself; a TCP port can be reached by whatever shares its network, so every request on
// it must show the key's token, the one secret its container holds. Clients send it as their API
// key (x-api-key, `Authorization: Bearer`, api-key) or, through the proxy, as the proxy URL's
// password. The header that carried it is removed before anything else reads the request: it
// never reaches an upstream, a service, an egress destination or a log.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { KeyRecord } from '../keys/store.ts';
import { tokenMatches } from '../keys/token.ts';
import { errorShapeOf } from '../wire/endpoints.ts';
import { GatewayError, sendError } from '../wire/errors.ts';

/** Where clients put a credential; each is checked, and removed when it held the token. */
const TOKEN_HEADERS = ['x-api-key', 'authorization', 'api-key', 'proxy-authorization'] as const;

/** The credential in a header value: a bare key, `Bearer T`, `token T` (gh), or Basic's password. */
function credentialOf(value: string): string {
  const space = value.indexOf(' ');
  if (space === -1) return value;
  const scheme = value.slice(0, space).toLowerCase();
  const rest = value.slice(space + 1).trim();
  if (scheme === 'bearer' || scheme === 'token') return rest;
  if (scheme === 'basic') {
    const decoded = Buffer.from(rest, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    return colon === -1 ? decoded : decoded.slice(colon + 1);
  }
  return value;
}

/** Whether `req` shows the token of `digest`; the headers that held it are deleted. */
function takeToken(req: IncomingMessage, digest: Buffer): boolean {
  let shown = false;
  for (const name of TOKEN_HEADERS) {
    const value = req.headers[name];
    if (typeof value === 'string' && tokenMatches(digest, credentialOf(value))) {
      delete req.headers[name];
      shown = true;
    }
  }
  return shown;
}

export interface TokenGuardOptions {
  /** The key a connection belongs to, and whether it came over TCP (only those are guarded). */
  keyOf(socket: Socket): KeyRecord | undefined;
  isTcp(socket: Socket): boolean;
  /** A request without the key's token was refused (its connection is closed after the answer). */
  onRefused(key: KeyRecord, remote: string | undefined): void;
}

export interface TokenGuard {
  request(next: (req: IncomingMessage, res: ServerResponse) => void): (req: IncomingMessage, res: ServerResponse) => void;
  connect(next: (req: IncomingMessage, socket: Socket, head: Buffer) => void): (req: IncomingMessage, socket: Socket, head: Buffer) => void;
}

const MISSING = "this address needs the key's token: send it as the API key (or as the proxy's password)";

export function createTokenGuard(options: TokenGuardOptions): TokenGuard {
  /** The key whose token `req` lacks; undefined when it may go on. */
  const refusedKey = (req: IncomingMessage): KeyRecord | undefined => {
    const socket = req.socket;
    const key = options.isTcp(socket) ? options.keyOf(socket) : undefined;
    if (!key?.tokenDigest || takeToken(req, key.tokenDigest)) return undefined;
    options.onRefused(key, socket.remoteAddress);
    return key;
  };
  return {
    request: (next) => (req, res) => {
      if (!refusedKey(req)) return next(req, res);
      const url = req.url ?? '/';
      // Origin form is an API call: its client reads the error in its provider's shape. Absolute
      // form is a proxy request: a 407 makes a proxy client show its proxy credentials.
      if (url.startsWith('/')) {
        sendError(res, errorShapeOf(url, req.headers), new GatewayError('invalid_token', MISSING, { connection: 'close' }));
      } else {
        const body = `${MISSING}\n`;
        res.writeHead(407, {
          'proxy-authenticate': 'Basic realm="llm-gateway"',
          'content-type': 'text/plain',
          'content-length': Buffer.byteLength(body),
          connection: 'close',
        });
        res.end(body);
      }
    },
    connect: (next) => (req, socket, head) => {
      if (!refusedKey(req)) return next(req, socket, head);
      socket.end(
        `HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="llm-gateway"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`,
      );
    },
  };
}
