// A small "tickets" REST API on loopback for the services tests. It wants the real credential in one
// configurable form (bearer, Basic, a named header or a query parameter), records every request as
// received, and has the awkward routes a credential-injecting gateway must handle: endpoints that
// reflect the credential in a body or in response headers, redirects to itself and elsewhere, an SSE
// stream, a request that never answers, and an upstream 401 of its own.
import http, { type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readBodyUpTo } from './http.ts';

export type RestCredential =
  /** `Authorization: Bearer <token>` */
  | { kind: 'bearer'; token: string }
  /** `Authorization: Basic base64(user:token)` */
  | { kind: 'basic'; user: string; token: string }
  /** `<name>: <token>`, e.g. `X-Api-Key` */
  | { kind: 'header'; name: string; token: string }
  /** `?<name>=<token>` */
  | { kind: 'query'; name: string; token: string };

export interface RestSeenRequest {
  method: string;
  /** Path with the query, as received. */
  path: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** The credential was present and right. */
  authorized: boolean;
}

export interface RestService {
  /** `http://127.0.0.1:PORT` (no trailing slash; routes live under /api). */
  url: string;
  port: number;
  requests: RestSeenRequest[];
  close(): Promise<void>;
}

export interface RestServiceOptions {
  credential: RestCredential;
}

/** Bodies beyond this are cut off with 413 (tests stay bounded). */
const MAX_BODY_BYTES = 1 << 20;
export const STREAM_EVENTS = 3;
const STREAM_GAP_MS = 50;

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

function authorized(credential: RestCredential, req: IncomingMessage, url: URL): boolean {
  switch (credential.kind) {
    case 'bearer':
      return req.headers.authorization === `Bearer ${credential.token}`;
    case 'basic':
      return req.headers.authorization === `Basic ${Buffer.from(`${credential.user}:${credential.token}`).toString('base64')}`;
    case 'header':
      return req.headers[credential.name.toLowerCase()] === credential.token;
    case 'query':
      return url.searchParams.getAll(credential.name).length === 1 && url.searchParams.get(credential.name) === credential.token;
  }
}

/** The credential as this request carried it, in whatever form the options choose. */
function receivedCredential(credential: RestCredential, req: IncomingMessage, url: URL): string {
  if (credential.kind === 'query') return url.searchParams.get(credential.name) ?? '';
  const name = credential.kind === 'header' ? credential.name.toLowerCase() : 'authorization';
  return String(req.headers[name] ?? '');
}

export async function startRestService(options: RestServiceOptions): Promise<RestService> {
  const { credential } = options;
  const timers = new Set<NodeJS.Timeout>();

  const stream = (res: ServerResponse): void => {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    let sent = 0;
    const next = (): void => {
      sent++;
      res.write(`event: tick\ndata: ${JSON.stringify({ n: sent })}\n\n`);
      if (sent === STREAM_EVENTS) return void res.end();
      const timer = setTimeout(() => {
        timers.delete(timer);
        next();
      }, STREAM_GAP_MS);
      timers.add(timer);
    };
    next();
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const method = req.method ?? '';
    const url = new URL(req.url ?? '/', 'http://x');
    const body = await readBodyUpTo(req, MAX_BODY_BYTES);
    const seen: RestSeenRequest = {
      method,
      path: req.url ?? '',
      headers: req.headers,
      body: body ?? Buffer.alloc(0),
      authorized: authorized(credential, req, url),
    };
    service.requests.push(seen);
    if (body === undefined) return sendJson(res, 413, { error: 'body too large' }, { connection: 'close' });
    if (!seen.authorized) return sendJson(res, 401, { error: 'bad credential' });

    const route = `${method} ${url.pathname}`;
    const ticket = /^GET \/api\/tickets\/([^/]+)$/.exec(route);
    if (ticket) return sendJson(res, 200, { id: decodeURIComponent(ticket[1] ?? ''), title: 'Printer on fire', status: 'open' });
    switch (route) {
      case 'POST /api/tickets':
        return sendJson(res, 201, { id: 'new-1', received_bytes: body.length });
      case 'GET /api/echo-headers':
        return sendJson(res, 200, { headers: req.headers });
      case 'GET /api/reflect-auth-header':
        return sendJson(
          res,
          200,
          { ok: true },
          {
            'x-seen-authorization': String(req.headers.authorization ?? ''),
            'x-seen-credential': receivedCredential(credential, req, url),
            'set-cookie': `session=${credential.token}`,
          },
        );
      case 'GET /api/redirect-same':
        return sendJson(res, 302, { redirect: 'same' }, { location: `${service.url}/api/tickets/1` });
      case 'GET /api/redirect-away':
        return sendJson(res, 302, { redirect: 'away' }, { location: 'http://example.invalid/x' });
      case 'GET /api/stream':
        return stream(res);
      case 'GET /api/slow':
        return; // never answered; close() drops the connection
      case 'GET /api/unauthorized':
        return sendJson(res, 401, { error: 'token expired' }, { 'www-authenticate': 'Bearer realm="x"' });
      default:
        return sendJson(res, 404, { error: 'no such route' });
    }
  };

  const server = http.createServer((req, res) => {
    handle(req, res).catch(() => res.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  const service: RestService = {
    url: `http://127.0.0.1:${port}`,
    port,
    requests: [],
    async close() {
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
  return service;
}
